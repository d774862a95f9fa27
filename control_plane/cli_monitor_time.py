"""``--since``/``--until`` of the monitoring commands: a point in time as epoch seconds,
an ISO 8601 time (``2026-11-30T08:00Z``; without an offset, UTC) or an age with its
unit (``90s``, ``30m``, ``24h``, ``7d``: that long before now)."""

from __future__ import annotations

import datetime
import re
import time

import click

AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(value: str, now: float) -> float:
    """Epoch seconds of ``value``; ValueError naming the accepted forms."""
    try:
        return float(value)
    except ValueError:
        pass
    age = AGE.fullmatch(value)
    if age:
        return now - float(age.group(1)) * UNIT[age.group(2)]
    try:
        moment = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r}: expected epoch seconds, an ISO 8601 time (2026-11-30T08:00Z)"
            " or an age (24h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def when_option(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> float | None:
    """The click callback of ``--since``/``--until`` (``now`` read when it runs)."""
    if value is None:
        return None
    try:
        return parse_when(value, time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
