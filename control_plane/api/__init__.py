"""The REST API (``/api/v1``): Flask blueprints over the services; see docs/api.md."""

from __future__ import annotations

from control_plane.api.factory import ApiOptions, create_api, register_api

__all__ = ["ApiOptions", "create_api", "register_api"]
