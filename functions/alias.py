"""Which package a container serves: the seam for function aliases and traffic splits.

Today: ``FLEETCAST_PACKAGE`` names the file; or ``FLEETCAST_ALIAS`` names an
alias looked up in ``FLEETCAST_ALIAS_FILE`` (JSON ``{"alias": "path.fcpkg"}``);
or the one ``*.fcpkg`` beside the handler (a built Lambda zip). The rollout
engine's function-alias split (issue #12, "Telemetry and rollouts") will write
that alias file, or replace :func:`resolve_package`, so a new container picks
the package its alias points at; nothing else in the handlers changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from edge_agent.errors import PackageError


def resolve_package(env: Mapping[str, str], here: Path) -> Path:
    """The package file this container loads (PackageError "format" when there is none)."""
    explicit = env.get("FLEETCAST_PACKAGE")
    if explicit:
        return Path(explicit)
    alias = env.get("FLEETCAST_ALIAS")
    if alias:
        table_path = Path(env.get("FLEETCAST_ALIAS_FILE", here / "aliases.json"))
        try:
            table = json.loads(table_path.read_text())
        except (OSError, ValueError) as exc:
            raise PackageError("format", f"alias table {table_path}: {exc}") from exc
        target = table.get(alias) if isinstance(table, dict) else None
        if not isinstance(target, str):
            raise PackageError("format", f"alias {alias!r} is not in {table_path}")
        path = Path(target)
        return path if path.is_absolute() else table_path.parent / path
    found = sorted(here.glob("*.fcpkg"))
    if len(found) != 1:
        raise PackageError(
            "format",
            f"set FLEETCAST_PACKAGE (found {len(found)} .fcpkg files in {here}, need exactly one)",
        )
    return found[0]
