"""The agent's own /metrics: a real ``fleetcast-agent run --metrics`` process, scraped over HTTP
after real predictions, parsed with prometheus-client's parser."""

from __future__ import annotations

import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from edge_support import AgentProcess
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "digits-mlp"


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_running_agent_serves_its_own_metrics(edge_packages: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="fc-", dir="/tmp") as tmp:
        agent = AgentProcess(
            Path(tmp) / "s", edge_packages.public_key, {"FLEETCAST_AGENT_METRICS": "127.0.0.1:0"}
        )
        try:
            port = int(agent.ready["metrics_port"])
            before = _scrape(port)
            info = (("agent_version", "0.1.0"), ("device", "device-under-test"))
            assert before[("fleetcast_agent_info", info)] == 1
            assert not any(name == "fleetcast_agent_model_info" for name, _ in before)
            assert agent.install(edge_packages.onnx).returncode == 0
            rows = edge_packages.x[:3]
            with grpc.insecure_channel(agent.address) as channel:
                stub = pb_grpc.EdgeScoringStub(channel)
                tensor = pb.Tensor(name="input", dtype="float32", shape=list(rows.shape),
                                   data=rows.tobytes())  # fmt: skip
                for _ in range(5):
                    stub.Predict(pb.PredictRequest(name=MODEL, inputs=[tensor]), timeout=10)
                bad = pb.Tensor(name="input", dtype="float32", shape=[1, 3], data=b"\0" * 12)
                with pytest.raises(grpc.RpcError):
                    stub.Predict(pb.PredictRequest(name=MODEL, inputs=[bad]), timeout=10)
            after = _scrape(port)
            infos = [labels for name, labels in after if name == "fleetcast_agent_model_info"]
            (labels,) = infos
            assert dict(labels)["model"] == MODEL and dict(labels)["runtime"] == "onnxruntime"
            version = (("model", MODEL), ("version", dict(labels)["version"]))
            assert after[("fleetcast_agent_requests_total", version)] == 6
            assert after[("fleetcast_agent_failures_total", version)] == 1
            assert after[("fleetcast_agent_latency_p95_ms", version)] > 0
            assert ("fleetcast_agent_outbox_messages", ()) in after
        finally:
            assert agent.stop() == 0
