"""Serve a WSGI app with waitress (a production server) on a thread: ``serve_http``.

``fleetcast serve --http HOST:PORT`` calls it with the app from ``create_app``;
tests call it with port 0 and read ``handle.port``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class HttpHandle:
    """A running server: its bound ``host``/``port``; ``stop()`` closes it and its worker."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread
    _on_stop: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        for stop in self._on_stop:
            stop()
        self._server.close()
        self._thread.join(timeout)


def serve_http(
    app: Any, host: str = "127.0.0.1", port: int = 8080, *, threads: int = 8
) -> HttpHandle:
    """Start waitress on ``host:port`` (0: any free port) and the app's compile worker."""
    from waitress.server import create_server

    server = create_server(app, host=host, port=port, threads=threads, ident="fleetcast")
    bound_port = int(server.socket.getsockname()[1])
    thread = threading.Thread(target=server.run, name=f"http-{bound_port}", daemon=True)
    thread.start()
    handle = HttpHandle(host, bound_port, server, thread)
    context = getattr(app, "extensions", {}).get("fleetcast.api")
    if context is not None and context.worker is not None:
        context.worker.start()
        handle._on_stop.append(context.worker.stop)
    if context is not None and context.explain_worker is not None:  # background explanations
        context.explain_worker.start()
        handle._on_stop.append(context.explain_worker.stop)
    logger.info("serving HTTP on %s", handle.url)
    return handle
