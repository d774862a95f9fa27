"""The one runtime core every serverless adapter shares.

A container loads its package ONCE, at init (module import on Lambda, the
first request elsewhere), verified exactly as the agent verifies an install:
package hash (when ``FLEETCAST_PACKAGE_SHA256`` is set), ed25519 signature,
model hash, hardware profile against this host, then the manifest's test
vectors through the loaded model. A package that fails any check fails the
container's init with the check named; bad requests never do: they get a
4xx naming the problem and the container stays warm.

Requests are JSON: ``{"inputs": {"input": [[...64 floats...], ...]}}``, or
``{"instances": [[...], ...]}`` for a model with one input. Replies:
``{"outputs": {...}, "prediction_id": "...", "model": {...}}``.

A container behind a function alias with a traffic split (``functions/alias.py``)
loads and verifies every package of the split at init, and each invocation is
answered by the version :func:`~functions.alias.pick_route` picks for its request
id; ``model`` in the reply says which.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import EdgeError, InvalidInput, PackageError
from edge_agent.host import detect_host
from edge_agent.runtime import Model, open_model
from edge_agent.runtime.selftest import self_test
from functions.alias import Route, pick_route, resolve
from functions.telemetry import FunctionTelemetry, TelemetrySettings

MAX_BODY_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous payload limit; larger bodies are refused with 413."""


class FunctionError(Exception):
    """A request the handler refuses; ``status`` is the HTTP status it maps to."""

    status = 400
    kind = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": self.kind, "detail": self.detail, "status": self.status}


class BadRequest(FunctionError):
    pass


class InvalidInputError(FunctionError):
    status = 422
    kind = "invalid_input"


class PayloadTooLarge(FunctionError):
    status = 413
    kind = "payload_too_large"


class NotFoundError(FunctionError):
    status = 404
    kind = "not_found"


class MethodNotAllowed(FunctionError):
    status = 405
    kind = "method_not_allowed"


class InternalError(FunctionError):
    status = 500
    kind = "scoring_failed"


@dataclass(frozen=True)
class FunctionConfig:
    package: Path
    public_key: Path
    expected_sha256: str | None = None
    threads: int = 1
    telemetry: TelemetrySettings | None = None
    routes: tuple[Route, ...] = ()
    """The alias' split (empty: ``package`` answers everything)."""
    alias: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FunctionConfig:
        env = os.environ if environ is None else environ
        here = Path(env.get("LAMBDA_TASK_ROOT", ".")).resolve()
        key = env.get("FLEETCAST_PUBLIC_KEY")
        assignment = resolve(env, here)
        return cls(
            package=assignment.routes[0].package,
            public_key=Path(key) if key else here / "fleetcast.pub",
            expected_sha256=env.get("FLEETCAST_PACKAGE_SHA256") or assignment.routes[0].sha256,
            threads=int(env.get("FLEETCAST_THREADS", "1")),
            telemetry=TelemetrySettings.from_env(env),
            routes=assignment.routes if len(assignment.routes) > 1 else (),
            alias=assignment.alias,
        )


def verified_model(config: FunctionConfig, route: Route | None = None) -> Model:
    """Open the package (``route``'s, else the config's) with every check the agent's
    installer runs; PackageError names it."""
    model = open_model(
        route.package if route is not None else config.package,
        config.public_key,
        host=detect_host(),
        threads=config.threads,
        expected_sha256=route.sha256 if route is not None else config.expected_sha256,
    )
    problems = self_test(model.loaded, model.manifest)
    if problems:
        raise PackageError("selftest", "; ".join(problems))
    return model


def _info(model: Model) -> dict[str, Any]:
    m = model.manifest
    return {
        "name": m.model_name,
        "version": m.model_version,
        "package_id": m.package_id,
        "release": m.release,
    }


class FunctionCore:
    """The loaded, verified model(s) and their telemetry; thread-safe, one per container."""

    def __init__(self, config: FunctionConfig) -> None:
        self.config = config
        self.routes = config.routes
        if self.routes:
            self.models = [verified_model(config, route) for route in self.routes]
            _check_split(self.routes, self.models)
        else:
            self.models = [verified_model(config)]
        self.model = self.models[0]  # the primary version (the largest share)
        m = self.model.manifest
        self._specs = {s.name: s for s in m.signature.inputs}
        self.infos = [_info(model) for model in self.models]
        self.info = self.infos[0]
        self.telemetry = (
            FunctionTelemetry(
                self.model, config.telemetry, others=self.models[1:], alias=config.alias
            )
            if config.telemetry
            else None
        )

    def choose(self, request_id: str | None) -> int:
        """Which loaded model answers this request (0 without a split)."""
        if not self.routes:
            return 0
        return pick_route(self.routes, request_id, self.config.alias or "")

    # -- requests

    def parse_body(self, body: bytes | str | None) -> dict[str, Any]:
        if body is None or body in (b"", ""):
            raise BadRequest('empty body: send JSON {"inputs": {NAME: [[...], ...]}}')
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise BadRequest(f"body must be a JSON object, got {type(payload).__name__}")
        return payload

    def arrays(self, payload: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if "inputs" in payload:
            inputs = payload["inputs"]
            if not isinstance(inputs, dict):
                raise BadRequest('"inputs" must be an object of input name -> nested list')
        elif "instances" in payload:
            if len(self._specs) != 1:
                raise BadRequest(
                    f'"instances" needs a single-input model; use "inputs" with '
                    f"{sorted(self._specs)}"
                )
            inputs = {next(iter(self._specs)): payload["instances"]}
        else:
            raise BadRequest(
                f'missing "inputs" (an object with {sorted(self._specs)}) or "instances"'
            )
        unknown = sorted(set(inputs) - set(self._specs))
        if unknown:
            raise InvalidInputError(
                f"unknown inputs {unknown}; the model takes {sorted(self._specs)}"
            )
        arrays = {}
        for name, value in inputs.items():
            try:  # JSON has no float/int distinction: cast to the signed dtype
                arrays[name] = np.asarray(value, dtype=np.dtype(self._specs[name].dtype))
            except (ValueError, TypeError) as exc:
                raise InvalidInputError(
                    f"input {name!r} is not a rectangular array of numbers: {exc}"
                ) from exc
        return arrays

    def predict(self, payload: Mapping[str, Any], request_id: str | None = None) -> dict[str, Any]:
        """Score one JSON request; raises FunctionError for what the caller got wrong.

        The payload's ``request_id`` (else ``request_id``, the platform's id of the
        invocation) picks the version of a split.
        """
        rid = payload.get("request_id") or request_id
        chosen = self.choose(str(rid) if rid is not None else None)
        arrays = self.arrays(payload)
        try:
            outputs, prediction_id = self.models[chosen].predict_with_id(arrays)
        except InvalidInput as exc:
            raise InvalidInputError(str(exc)) from exc
        except EdgeError as exc:
            raise InternalError(str(exc)) from exc
        finally:
            if self.telemetry is not None:
                self.telemetry.after_invocation()
        return {
            "outputs": {k: v.tolist() for k, v in outputs.items()},
            "prediction_id": prediction_id,
            "model": self.infos[chosen],
        }

    def predict_body(
        self, body: bytes | str | None, request_id: str | None = None
    ) -> dict[str, Any]:
        return self.predict(self.parse_body(body), request_id)


def _check_split(routes: tuple[Route, ...], models: list[Model]) -> None:
    """Every package of a split serves the same model with the same inputs, at its version."""
    first = models[0].manifest
    for route, model in zip(routes, models, strict=True):
        m = model.manifest
        if route.version is not None and m.model_version != route.version:
            raise PackageError(
                "format",
                f"{route.package} holds version {m.model_version}, the alias routes "
                f"{route.percent}% to version {route.version}",
            )
        if m.model_name != first.model_name or m.signature.inputs != first.signature.inputs:
            raise PackageError(
                "format",
                f"{route.package} ({m.model_name}) does not take the inputs of "
                f"{first.model_name} {first.model_version}: a split needs one signature",
            )


_core: FunctionCore | None = None
_core_lock = threading.Lock()


def get_core() -> FunctionCore:
    """The container's core, built on first use from the environment (once)."""
    global _core
    if _core is None:
        with _core_lock:
            if _core is None:
                _core = FunctionCore(FunctionConfig.from_env())
    return _core


def reset_core() -> None:
    """Forget the container's core (tests; a new package on the next request)."""
    global _core
    with _core_lock:
        if _core is not None and _core.telemetry is not None:
            _core.telemetry.close()
        _core = None
