"""A small client of the REST API for the CLI (stdlib HTTP; problems become our errors).

The server and token come from ``--server``/``FLEETCAST_SERVER`` and
``FLEETCAST_TOKEN``, else from the config file written by ``fleetcast login``
(``$XDG_CONFIG_HOME/fleetcast/cli.json``, mode 0600).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.errors import (
    Conflict,
    ControlPlaneError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

DEFAULT_SERVER = "http://127.0.0.1:8080"
BY_STATUS: dict[int, type[ControlPlaneError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
    429: ResourceExhausted,
    503: Unavailable,
}


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fleetcast" / "cli.json"


def read_config(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{path}: not JSON ({exc}); run `fleetcast login` again") from exc
    return {k: str(v) for k, v in raw.items() if k in ("server", "token")}


def write_config(path: Path, server: str, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"server": server, "token": token}, out)
    path.chmod(0o600)


@dataclass(frozen=True)
class ApiClient:
    server: str
    token: str | None
    timeout: float = 30.0

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; the JSON answer, or our error carrying the problem's detail."""
        url = self.server.rstrip("/") + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        raw = self._send(urllib.request.Request(url, data=data, method=method, headers=headers))
        return json.loads(raw) if raw else None

    def download(self, path: str) -> bytes:
        """GET a file (a package) as bytes; problems become our errors as in :meth:`request`."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = self.server.rstrip("/") + path
        return self._send(urllib.request.Request(url, method="GET", headers=headers))

    def _send(self, req: urllib.request.Request) -> bytes:
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as answer:
                raw: bytes = answer.read()
                return raw
        except urllib.error.HTTPError as exc:
            raise _problem_error(exc) from None
        except urllib.error.URLError as exc:
            raise Unavailable(f"cannot reach {self.server}: {exc.reason}") from exc

    def pages(self, path: str, query: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a list, following its ``next`` links."""
        answer = self.request("GET", path, query=query)
        while True:
            yield from answer["items"]
            if not answer.get("next"):
                return
            answer = self.request("GET", answer["next"])


def _problem_error(exc: urllib.error.HTTPError) -> ControlPlaneError:
    try:
        problem = json.loads(exc.read() or b"{}")
    except ValueError:
        problem = {}
    detail = problem.get("detail") or exc.reason
    for item in problem.get("errors") or []:
        detail += f"\n  {'.'.join(item.get('loc', []))}: {item.get('msg')}"
    kind = BY_STATUS.get(exc.code, ControlPlaneError)
    return kind(f"{exc.code} {problem.get('title', exc.reason)}: {detail}")
