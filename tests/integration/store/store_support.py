"""Types shared by the store tests."""

from __future__ import annotations

from collections.abc import Callable

from control_plane.store.sql.store import SqlRepositories

OpenStore = Callable[[], SqlRepositories]
