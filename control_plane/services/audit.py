"""The audit log: who changed what, when, with the state before and after."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from control_plane.services import Clock
from control_plane.store.records import DEFAULT_LIMIT, AuditEntry, Page
from control_plane.store.repos import AuditRepo

logger = logging.getLogger(__name__)


class AuditService:
    """Writes one entry per change; the API calls :meth:`record` after every mutation."""

    def __init__(self, repo: AuditRepo, clock: Clock = time.time) -> None:
        self.repo = repo
        self.clock = clock

    def record(
        self,
        actor: str,
        action: str,
        subject: str,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        logger.info("audit: %s %s %s", actor, action, subject)
        return self.repo.add(
            actor, action, subject, self.clock(), before=before, after=after, detail=detail
        )

    def list(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        subject: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[AuditEntry]:
        return self.repo.list(
            actor=actor,
            action=action,
            subject=subject,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
