"""The control plane's services: every rule about devices, commands, packages and uploads.

Each service takes the repositories (``control_plane.store.repos``, Protocols)
and a clock; none imports a database driver. The transports (gRPC servicer,
MQTT bridge) and the REST API call the same services, built once by
``control_plane.app.create_app``. Errors are the domain tree in
``control_plane.errors``, mapped to gRPC and HTTP statuses at the edges.

    devices      list/filter, labels, reports, revoke, credentials, batched last-seen
    enrollment   tokens with a TTL, reserved ids, enroll (plus the broker login)
    commands     send (deploys resolved to a catalog package), pending, ack
    packages     register a verified .fcpkg, downloads scoped to deployed packages
    ingest       uploads stored exactly once per (device, seq), quotas
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
