"""The device-local scoring API over gRPC (protos/fleetcast/v1/scoring.proto).

A thin adapter: it turns wire tensors into numpy arrays, calls the Agent, and
turns results and errors back. It binds to a Unix socket or a loopback port
only. Requests over ``max_request_bytes`` or ``max_batch`` rows are answered
with INVALID_ARGUMENT; gRPC itself refuses messages over twice that size
(RESOURCE_EXHAUSTED) before they reach the servicer.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np

from edge_agent.agent import Agent
from edge_agent.errors import EdgeError, InstallError, InvalidInput, NotFound, PackageError
from edge_agent.files import SOCKET
from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc
from edge_agent.runtime import Model

if TYPE_CHECKING:
    from edge_agent.core.device_manifest import AnyTensorSpec

logger = logging.getLogger(__name__)

MAX_DIMS = 8
DTYPES = frozenset({"float32", "float16", "int8", "uint8", "int32", "int64"})
GRPC_STATUS: dict[type[EdgeError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PackageError: grpc.StatusCode.FAILED_PRECONDITION,
    InstallError: grpc.StatusCode.FAILED_PRECONDITION,
}

R = TypeVar("R")


def _status_for(exc: EdgeError) -> grpc.StatusCode:
    for kind in type(exc).__mro__:
        if kind in GRPC_STATUS:
            return GRPC_STATUS[kind]
    return grpc.StatusCode.INTERNAL


def _mapped(method: Callable[[Any, Any, Any], R]) -> Callable[[Any, Any, Any], R]:
    """Map our errors to gRPC status codes, once, at the edge."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: Any) -> R:
        try:
            return method(self, request, context)
        except EdgeError as exc:
            context.abort(_status_for(exc), str(exc))
            raise  # unreachable: abort raises

    return wrapper


def decode_tensor(tensor: Any) -> np.ndarray:
    if tensor.dtype not in DTYPES:
        raise InvalidInput(f"input {tensor.name!r}: unknown dtype {tensor.dtype!r}")
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input {tensor.name!r}: {len(shape)} dimensions (at most {MAX_DIMS})")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {tensor.name!r}: negative dimension in shape {list(shape)}")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: [2**32, 2**32] cannot wrap
    if expected != len(tensor.data):
        raise InvalidInput(
            f"input {tensor.name!r}: {len(tensor.data)} bytes do not hold shape {list(shape)} "
            f"of {tensor.dtype} ({expected} bytes)"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def encode_tensor(name: str, array: np.ndarray) -> Any:
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return pb.Tensor(
        name=name, dtype=array.dtype.name, shape=list(array.shape), data=array.tobytes()
    )


def _spec(spec: AnyTensorSpec) -> Any:
    return pb.TensorSpec(
        name=spec.name,
        dtype=spec.dtype,
        shape=list(spec.shape),
        feature_names=list(spec.feature_names or ()),
    )


class ScoringServicer(pb_grpc.EdgeScoringServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.max_request_bytes = agent.settings.max_request_bytes
        self.max_batch = agent.settings.max_batch

    def _describe(self, name: str, model: Model | None) -> Any:
        pointer = self.agent.installed().get(name)
        if model is None and pointer is None:
            raise NotFound(f"model {name!r} is not installed")
        desc = pb.ModelDescription(name=name, loaded=model is not None)
        if pointer is not None:
            desc.slot = pointer.active.slot
            desc.sha256 = pointer.active.sha256
            desc.package_id = pointer.active.package_id
            desc.release = pointer.active.release
            desc.previous_package_id = pointer.previous.package_id if pointer.previous else ""
        if model is not None:
            m = model.manifest
            desc.version, desc.package_id, desc.release = m.model_version, m.package_id, m.release
            desc.runtime, desc.format, desc.recipe = m.runtime, m.format, m.recipe
            desc.profile_id = m.profile.id
            desc.inputs.extend(_spec(s) for s in m.signature.inputs)
            desc.outputs.extend(_spec(s) for s in m.signature.outputs)
        return desc

    def _tensors(self, tensors: Iterable[Any]) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for tensor in tensors:
            if tensor.name in arrays:
                raise InvalidInput(f"input {tensor.name!r} given twice")
            try:
                array = decode_tensor(tensor)
            except (ValueError, OverflowError, TypeError) as exc:  # anything numpy refuses
                raise InvalidInput(f"input {tensor.name!r}: {exc}") from exc
            if array.ndim and array.shape[0] > self.max_batch:
                raise InvalidInput(f"batch of {array.shape[0]} rows exceeds {self.max_batch}")
            arrays[tensor.name] = array
        return arrays

    def _check_size(self, request: Any) -> None:
        size = request.ByteSize()
        if size > self.max_request_bytes:
            raise InvalidInput(f"request of {size} bytes exceeds {self.max_request_bytes}")

    @_mapped
    def LoadModel(self, request: Any, context: Any) -> Any:
        path = Path(request.package_path) if request.package_path else None
        model = self.agent.load_model(request.name, path)
        return self._describe(model.manifest.model_name, model)

    @_mapped
    def UnloadModel(self, request: Any, context: Any) -> Any:
        self.agent.unload_model(request.name)
        return pb.UnloadModelResponse()

    @_mapped
    def ListModels(self, request: Any, context: Any) -> Any:
        names = sorted(set(self.agent.installed()) | set(self.agent.models))
        return pb.ListModelsResponse(
            models=[self._describe(n, self.agent.models.get(n)) for n in names]
        )

    @_mapped
    def DescribeModel(self, request: Any, context: Any) -> Any:
        return self._describe(request.name, self.agent.models.get(request.name))

    @_mapped
    def Predict(self, request: Any, context: Any) -> Any:
        self._check_size(request)
        model = self.agent.model(request.name)
        if not request.inputs:
            raise InvalidInput("no input tensors")
        outputs, prediction_id = model.predict_with_id(self._tensors(request.inputs))
        return pb.PredictResponse(
            outputs=[encode_tensor(n, a) for n, a in outputs.items()],
            prediction_id=prediction_id,
            package_id=model.manifest.package_id,
        )

    @_mapped
    def CaptureData(self, request: Any, context: Any) -> Any:
        self._check_size(request)
        accepted = self.agent.capture(
            request.name,
            self._tensors(request.inputs),
            self._tensors(request.outputs),
            request.prediction_id,
        )
        return pb.CaptureDataResponse(accepted=accepted)


def _check_local(address: str) -> str:
    if address.startswith("unix:"):
        return address
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host == "localhost":
        return address
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or not port:
        raise ValueError(f"local API address {address!r}: only unix:PATH or loopback HOST:PORT")
    return address


def serve(agent: Agent, address: str, options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Start the scoring server; returns (server, bound address with the real port)."""
    address = _check_local(address)
    limit = 2 * agent.settings.max_request_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=agent.settings.grpc_workers, thread_name_prefix="fleetcast-grpc"
        ),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            *(options or {}).items(),
        ],
    )
    pb_grpc.add_EdgeScoringServicer_to_server(ScoringServicer(agent), server)  # type: ignore[no-untyped-call]
    if address.startswith("unix:"):
        Path(address[5:]).unlink(missing_ok=True)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the local API to {address}")
    server.start()
    if address.startswith("unix:"):  # explicitly, not whatever the umask left
        os.chmod(address[5:], SOCKET)
    bound = address if address.startswith("unix:") else f"{address.rpartition(':')[0]}:{port}"
    logger.info("local scoring API on %s", bound)
    return server, bound
