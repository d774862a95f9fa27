"""The local gRPC scoring API on a real server: predict, errors, concurrency, captures."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from edge_support import AgentProcess

from edge_agent.agent import Agent
from edge_agent.local_api import serve
from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc
from edge_agent.settings import Settings
from edge_agent.transport.memory import InMemoryTransport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "digits-mlp"
MAX_REQUEST = 256 * 1024


def tensor(array: np.ndarray, name: str = "input") -> Any:
    return pb.Tensor(
        name=name, dtype=array.dtype.name, shape=list(array.shape), data=array.tobytes()
    )


@pytest.fixture
def served(tmp_path: Path, edge_packages: Any) -> Iterator[tuple[Agent, Any]]:
    settings = Settings(
        state_dir=tmp_path / "state",
        public_key=edge_packages.public_key,
        device_id="api-test",
        max_request_bytes=MAX_REQUEST,
        grpc_workers=8,
        capture_rate=1.0,
        max_captures=4,
    )
    agent = Agent(settings, InMemoryTransport())
    agent.start(background=False)
    agent.install_file(edge_packages.onnx)
    server, address = serve(agent, "127.0.0.1:0")
    channel = grpc.insecure_channel(address)
    try:
        yield agent, pb_grpc.EdgeScoringStub(channel)
    finally:
        channel.close()
        server.stop(None)
        agent.close()


def test_predict_matches_in_process(served: tuple[Agent, Any], edge_packages: Any) -> None:
    agent, stub = served
    rows = edge_packages.x[:5]
    reply = stub.Predict(pb.PredictRequest(name=MODEL, inputs=[tensor(rows)]), timeout=10)
    out = reply.outputs[0]
    got = np.frombuffer(out.data, dtype=out.dtype).reshape(tuple(out.shape))
    expected = agent.models[MODEL].predict({"input": rows})["output"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert reply.prediction_id and reply.package_id.endswith("-r1")


@pytest.mark.parametrize(
    ("case", "request_fn"),
    [
        ("wrong shape", lambda x: [tensor(np.zeros((2, 63), np.float32))]),
        ("wrong dtype", lambda x: [tensor(np.zeros((2, 64), np.int32))]),
        ("missing input", lambda x: []),
        (
            "unknown dtype",
            lambda x: [pb.Tensor(name="input", dtype="complex64", shape=[1, 64], data=b"\0" * 512)],
        ),
        (
            "bytes do not fit shape",
            lambda x: [pb.Tensor(name="input", dtype="float32", shape=[2, 64], data=b"\0" * 100)],
        ),
        ("NaN", lambda x: [tensor(np.full((1, 64), np.nan, np.float32))]),
        ("oversized payload", lambda x: [tensor(np.zeros((1200, 64), np.float32))]),
        ("input given twice", lambda x: [tensor(x[:1]), tensor(x[:1])]),
        ("unknown input name", lambda x: [tensor(x[:1]), tensor(x[:1], name="extra")]),
    ],
)
def test_malformed_requests_are_invalid_argument(
    served: tuple[Agent, Any], edge_packages: Any, case: str, request_fn: Any
) -> None:
    agent, stub = served
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(pb.PredictRequest(name=MODEL, inputs=request_fn(edge_packages.x)), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, info.value.details())
    reply = stub.Predict(
        pb.PredictRequest(name=MODEL, inputs=[tensor(edge_packages.x[:1])]), timeout=10
    )
    assert list(reply.outputs[0].shape) == [1, 10]  # still serving


def test_unknown_model_is_not_found(served: tuple[Agent, Any], edge_packages: Any) -> None:
    _, stub = served
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(pb.PredictRequest(name="nope", inputs=[tensor(edge_packages.x[:1])]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_invalid_requests_count_in_telemetry(served: tuple[Agent, Any], edge_packages: Any) -> None:
    agent, stub = served
    stub.Predict(pb.PredictRequest(name=MODEL, inputs=[tensor(edge_packages.x[:3])]))
    with pytest.raises(grpc.RpcError):
        stub.Predict(pb.PredictRequest(name=MODEL, inputs=[tensor(np.zeros((1, 3), np.float32))]))
    telemetry = agent.models[MODEL].telemetry
    assert telemetry is not None
    window = telemetry.close_window("api-test", 1)
    assert (window["requests"], window["rows"], window["invalid"]) == (2, 3, 1)


def test_model_management_calls(served: tuple[Agent, Any], edge_packages: Any) -> None:
    agent, stub = served
    listed = stub.ListModels(pb.ListModelsRequest()).models
    assert [(m.name, m.loaded, m.release) for m in listed] == [(MODEL, True, 1)]
    desc = stub.DescribeModel(pb.DescribeModelRequest(name=MODEL))
    assert desc.inputs[0].name == "input" and list(desc.inputs[0].shape) == [-1, 64]
    assert desc.runtime == "onnxruntime" and desc.slot == "a"
    stub.UnloadModel(pb.UnloadModelRequest(name=MODEL))
    assert not stub.DescribeModel(pb.DescribeModelRequest(name=MODEL)).loaded
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(pb.PredictRequest(name=MODEL, inputs=[tensor(edge_packages.x[:1])]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.LoadModel(pb.LoadModelRequest(name=MODEL)).loaded
    new = stub.LoadModel(pb.LoadModelRequest(package_path=str(edge_packages.release(2))))
    assert (new.release, new.slot, new.previous_package_id) == (2, "b", desc.package_id)
    with pytest.raises(grpc.RpcError) as info:
        stub.LoadModel(pb.LoadModelRequest(package_path=str(edge_packages.bad_vectors(3))))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "selftest" in info.value.details()


def test_capture_data_joins_the_window(served: tuple[Agent, Any], edge_packages: Any) -> None:
    agent, stub = served
    x = edge_packages.x[:1]
    y = np.zeros((1, 10), np.float32)
    reply = stub.CaptureData(
        pb.CaptureDataRequest(
            name=MODEL, prediction_id="app-42", inputs=[tensor(x)], outputs=[tensor(y, "output")]
        )
    )
    assert reply.accepted
    telemetry = agent.models[MODEL].telemetry
    assert telemetry is not None
    captures = telemetry.close_window("api-test", 1)["captures"]
    assert [(c["prediction_id"], c["source"]) for c in captures] == [("app-42", "application")]


def test_concurrent_predicts_run_concurrently(
    served: tuple[Agent, Any], edge_packages: Any
) -> None:
    """Four calls meet at a barrier inside the model: serialised calls would never meet."""
    agent, stub = served
    model = agent.models[MODEL]
    barrier = threading.Barrier(4, timeout=20)
    inner = model.loaded

    class Meeting:
        signature = inner.signature

        def predict(self, inputs: Any) -> Any:
            barrier.wait()
            return inner.predict(inputs)

    model.loaded = Meeting()
    request = pb.PredictRequest(name=MODEL, inputs=[tensor(edge_packages.x[:1])])
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: stub.Predict(request, timeout=30), range(4)))
    assert len({r.prediction_id for r in replies}) == 4
    assert not barrier.broken


def test_agent_process_on_a_unix_socket(edge_packages: Any) -> None:
    """The real daemon: install with the CLI over a Unix socket, then Predict."""
    with tempfile.TemporaryDirectory(prefix="fc-", dir="/tmp") as tmp:
        state = Path(tmp) / "s"
        agent = AgentProcess(
            state,
            edge_packages.public_key,
            {"FLEETCAST_AGENT_LISTEN": "unix:{state_dir}/agent.sock"},
        )
        try:
            assert agent.address == f"unix:{state}/agent.sock"
            result = agent.install(edge_packages.litert)
            assert result.returncode == 0, result.stderr
            assert '"release": 1' in result.stdout
            with grpc.insecure_channel(agent.address) as channel:
                stub = pb_grpc.EdgeScoringStub(channel)
                reply = stub.Predict(
                    pb.PredictRequest(name=MODEL, inputs=[tensor(edge_packages.x[:4])]), timeout=10
                )
                assert list(reply.outputs[0].shape) == [4, 10]
                refused = agent.install(edge_packages.wrong_profile())
                assert refused.returncode != 0 and "verify (profile check)" in refused.stderr
        finally:
            assert agent.stop() == 0


def test_local_api_refuses_non_loopback_addresses(served: tuple[Agent, Any]) -> None:
    agent, _ = served
    with pytest.raises(ValueError, match="loopback"):
        serve(agent, "0.0.0.0:0")


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**62, 4], [2**63 - 1, 2], [1] * 9])
def test_crafted_shapes_are_invalid_argument(served: tuple[Agent, Any], shape: list[int]) -> None:
    """Shapes whose element count overflows int64 (or is absurd) are refused, never UNKNOWN."""
    _, stub = served
    crafted = pb.Tensor(name="input", dtype="float32", shape=shape, data=b"")
    calls = {
        "Predict": lambda: stub.Predict(
            pb.PredictRequest(name=MODEL, inputs=[crafted]), timeout=10
        ),
        "CaptureData": lambda: stub.CaptureData(
            pb.CaptureDataRequest(name=MODEL, prediction_id="p", inputs=[crafted]), timeout=10
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, info.value.details())
        assert "input 'input'" in str(info.value.details())


def test_unix_socket_is_0660_whatever_the_umask(edge_packages: Any) -> None:
    import os
    import stat

    with tempfile.TemporaryDirectory(prefix="fc-", dir="/tmp") as tmp:
        settings = Settings(
            state_dir=Path(tmp) / "s", public_key=edge_packages.public_key, device_id="sock"
        )
        agent = Agent(settings)
        agent.start(background=False)
        old = os.umask(0)
        try:
            server, address = serve(agent, f"unix:{tmp}/agent.sock")
        finally:
            os.umask(old)
        try:
            mode = stat.S_IMODE(os.stat(f"{tmp}/agent.sock").st_mode)
            assert oct(mode) == oct(0o660)
        finally:
            server.stop(None)
            agent.close()


@pytest.mark.parametrize(
    ("path", "message"),
    [("/dev/zero", "is not a regular file"), ("/nonexistent.fcpkg", "cannot read")],
)
def test_load_model_of_a_path_that_is_no_package_file(
    served: tuple[Agent, Any], path: str, message: str
) -> None:
    """/dev/zero would be read for ever; a missing file would surface as UNKNOWN."""
    _, stub = served
    with pytest.raises(grpc.RpcError) as info:
        stub.LoadModel(pb.LoadModelRequest(package_path=path), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert message in str(info.value.details())
