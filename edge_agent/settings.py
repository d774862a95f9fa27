"""The agent's settings: one frozen object, read from FLEETCAST_AGENT_* once by the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PREFIX = "FLEETCAST_AGENT_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    public_key: Path
    device_id: str
    listen: str = "unix:{state_dir}/agent.sock"
    """Local scoring API address: ``unix:PATH`` or ``127.0.0.1:PORT`` (loopback only)."""
    window_seconds: float = 60.0
    capture_rate: float = 0.0
    max_captures: int = 16
    outbox_quota_bytes: int = 64 * 1024 * 1024
    send_interval_seconds: float = 5.0
    bake_seconds: float = 300.0
    health_min_requests: int = 20
    health_max_error_rate: float = 0.05
    health_max_latency_ratio: float = 2.0
    threads: int = 1
    grpc_workers: int = 8
    max_request_bytes: int = 4 * 1024 * 1024
    max_batch: int = 1024
    server: str | None = None
    """The control plane: ``grpc://HOST:PORT`` or ``mqtt://HOST:PORT`` (none: local only)."""
    ca_cert: str | None = None
    """CA certificate (PEM) for TLS to the control plane or broker."""
    crash_at: str | None = None
    """Test hook: SIGKILL the agent at this install checkpoint (see install.CRASH_POINTS)."""

    @property
    def listen_address(self) -> str:
        return self.listen.replace("{state_dir}", str(self.state_dir))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Settings from FLEETCAST_AGENT_<FIELD> variables; ``overrides`` win (CLI flags)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = PREFIX + f.name.upper()
            if overrides.get(f.name) is not None:
                raw: Any = overrides[f.name]
            elif var in environ:
                raw = environ[var]
            else:
                continue
            values[f.name] = _convert(var, f.type, raw)
        for required in ("state_dir", "public_key", "device_id"):
            if required not in values:
                flag = "--" + required.replace("_", "-")
                raise SettingsError(f"{PREFIX}{required.upper()} is not set (or pass {flag})")
        return cls(**values)


def _convert(var: str, kind: Any, raw: Any) -> Any:
    kind = str(kind)
    if not isinstance(raw, str):
        return Path(raw) if kind == "Path" else raw
    try:
        if kind == "Path":
            return Path(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{var}={raw!r}: expected {kind}") from exc
    if kind == "str | None":
        return raw or None
    return raw
