"""Function aliases: a name (``fraud-scorer:live``) and a traffic split over versions (pure).

An alias routes a function's requests to model versions by percentage, Knative
style: ``{"7": 90, "8": 10}``. A rollout with an alias target moves the split
step by step (``SetTraffic``); its end points the alias at one version
(``PointAlias``). This module validates names and splits and computes the split
a rollout action asks for; it does no I/O.

Names are ``FUNCTION:ALIAS``: the function part is the function's identity (the
device id its containers report telemetry under, unless the alias says another),
the alias part names the route (``live``, ``canary``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from control_plane.errors import InvalidInput

FUNCTION = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
ALIAS = r"[a-z][a-z0-9_-]{0,31}"
NAME_PATTERN = rf"^{FUNCTION}:{ALIAS}$"
_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_ROUTES = 8
"""More versions than this in one split is a mistake, not a rollout."""

Routes = dict[str, int]
"""version → percent of requests (integers summing to 100, none zero)."""


def check_alias_name(name: str) -> str:
    """``FUNCTION:ALIAS``; InvalidInput naming the expected shape."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"function alias {name!r}: expected FUNCTION:ALIAS "
            f"(function {FUNCTION}, alias {ALIAS}, e.g. fraud-scorer:live)"
        )
    return name


def function_of(name: str) -> str:
    """The function part of ``FUNCTION:ALIAS`` (the default telemetry identity)."""
    return check_alias_name(name).split(":", 1)[0]


def normalize_routes(routes: Mapping[str, int]) -> Routes:
    """Validate a split: 1..MAX_ROUTES versions, whole percentages, summing to 100.

    Versions with 0% are dropped (a split moved to 0/100 keeps one version).
    Ordered by percent, largest first (the primary version first).
    """
    if not routes:
        raise InvalidInput('routes: give at least one version (e.g. {"7": 100})')
    clean: Routes = {}
    for version, percent in routes.items():
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise InvalidInput(f"routes: version {version!r}: expected {_VERSION.pattern}")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise InvalidInput(f"routes.{version}: {percent!r} is not a whole percent in 0..100")
        if percent:
            clean[version] = percent
    total = sum(clean.values())
    if total != 100:
        raise InvalidInput(f"routes: percentages sum to {total}, not 100 ({dict(routes)})")
    if len(clean) > MAX_ROUTES:
        raise InvalidInput(f"routes: {len(clean)} versions, at most {MAX_ROUTES}")
    return dict(sorted(clean.items(), key=lambda item: (-item[1], item[0])))


def primary_version(routes: Mapping[str, int]) -> str:
    """The version with the largest share (ties: the smallest name): what "the alias" serves."""
    return min(routes.items(), key=lambda item: (-item[1], item[0]))[0]


def traffic_split(version: str, percent: int, previous_version: str | None) -> Routes:
    """The split a ``SetTraffic`` asks for: ``percent`` to ``version``, the rest to the previous.

    ``percent == 0`` is the rollback (everything back to ``previous_version``).
    InvalidInput when part of the traffic would have nowhere to go.
    """
    if not 0 <= percent <= 100:
        raise InvalidInput(f"traffic {percent}: expected 0..100")
    if percent < 100 and previous_version is None:
        raise InvalidInput(
            f"traffic {percent}% to {version}: the other {100 - percent}% needs a previous version"
        )
    if previous_version is None or previous_version == version:
        return {version: 100}
    return normalize_routes({version: percent, previous_version: 100 - percent})
