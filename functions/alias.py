"""Which packages a container serves, and which one answers each request (function aliases).

A container resolves its assignment ONCE, at init, and keeps it for its life:

- ``FLEETCAST_PACKAGE``: one package, no alias.
- ``FLEETCAST_ALIAS`` (``FUNCTION:ALIAS``, or any name a local table knows), looked up in
  the first source that is set:

  1. ``FLEETCAST_ALIAS_ROUTES``: the split as JSON, ``{"7": 90, "8": 10}`` (no network);
     the packages are the ``*.fcpkg`` files in ``FLEETCAST_PACKAGES_DIR`` (default: the
     task root), matched by their manifest's ``model_version``.
  2. ``FLEETCAST_ALIAS_FILE``: a JSON table ``{alias: "file.fcpkg"}`` or
     ``{alias: {"routes": {"7": 90, "8": 10}, "packages": {"7": "a.fcpkg", ...}}}``
     (``packages`` optional: then matched by version as above).
  3. ``FLEETCAST_API_URL`` (+ ``FLEETCAST_API_TOKEN``, a viewer token): the control
     plane's ``GET /api/v1/functions/aliases/{alias}``. Its answer names each version's
     packages by profile; the container takes ``FLEETCAST_PROFILE``'s (or the only one),
     from the packages directory when a file ``<sha256>.fcpkg`` is there, else downloads
     it (``GET /api/v1/packages/{sha256}/file``) into ``FLEETCAST_PACKAGE_CACHE``
     (default ``/tmp/fleetcast/packages``), checked against the sha256 it asked for.
  4. else ``aliases.json`` beside the handler, as in 2.

- else the one ``*.fcpkg`` beside the handler (a built Lambda zip).

With a split, every **invocation** picks its version (:func:`pick_route`), as
Knative's router and Lambda's weighted aliases split per request: a container
decides nothing for the whole of its life, so 10% means 10% of requests even
with one warm container. The pick is deterministic per request id (the same id
always lands on the same version, so a retry sees the same model), uniform
over ids; without an id it is random.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import PackageError

BUCKETS = 10_000
"""Percent x 100: a split is exact to 0.01% over request ids."""


@dataclass(frozen=True)
class Route:
    """One version of the split: its share and the package file serving it."""

    version: str | None
    percent: int
    package: Path
    sha256: str | None = None


@dataclass(frozen=True)
class Assignment:
    alias: str | None
    routes: tuple[Route, ...]
    source: str
    """package | env | file | api | task-root: where the assignment came from."""


def resolve_package(env: Mapping[str, str], here: Path) -> Path:
    """The primary package this container loads (PackageError "format" when there is none)."""
    return resolve(env, here).routes[0].package


def resolve(env: Mapping[str, str], here: Path) -> Assignment:
    """This container's assignment (see the module docstring for the order of the sources)."""
    explicit = env.get("FLEETCAST_PACKAGE")
    if explicit:
        return Assignment(None, (Route(None, 100, Path(explicit)),), "package")
    alias = env.get("FLEETCAST_ALIAS")
    packages_dir = Path(env.get("FLEETCAST_PACKAGES_DIR") or here)
    if alias:
        if env.get("FLEETCAST_ALIAS_ROUTES"):
            routes = _routes(env["FLEETCAST_ALIAS_ROUTES"], "FLEETCAST_ALIAS_ROUTES")
            return Assignment(
                alias, _local(routes, {}, packages_dir, "FLEETCAST_ALIAS_ROUTES"), "env"
            )
        if env.get("FLEETCAST_ALIAS_FILE") or not env.get("FLEETCAST_API_URL"):
            table = Path(env.get("FLEETCAST_ALIAS_FILE") or here / "aliases.json")
            return _from_file(alias, table, packages_dir)
        return _from_api(alias, env, packages_dir)
    found = sorted(here.glob("*.fcpkg"))
    if len(found) != 1:
        raise PackageError(
            "format",
            f"set FLEETCAST_PACKAGE (found {len(found)} .fcpkg files in {here}, need exactly one)",
        )
    return Assignment(None, (Route(None, 100, found[0]),), "task-root")


def pick_route(routes: Sequence[Route], request_id: str | None, salt: str = "") -> int:
    """The index of the route answering this request: ``hash(salt, id)`` cut by the shares."""
    if len(routes) == 1:
        return 0
    if request_id:
        digest = hashlib.sha256(f"{salt}\x00{request_id}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") % BUCKETS
    else:
        import random

        bucket = random.randrange(BUCKETS)
    edge = 0
    for index, route in enumerate(routes):
        edge += route.percent * (BUCKETS // 100)
        if bucket < edge:
            return index
    return len(routes) - 1


# ---- sources ----------------------------------------------------------------------------------


def _routes(value: Any, where: str) -> dict[str, int]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise PackageError("format", f"{where}: not JSON: {exc}") from exc
    if not isinstance(value, dict) or not value:
        raise PackageError("format", f"{where}: expected {{version: percent, ...}}, got {value!r}")
    routes: dict[str, int] = {}
    for version, percent in value.items():
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise PackageError("format", f"{where}: {version}: {percent!r} is not a percent")
        if percent:
            routes[str(version)] = percent
    if sum(routes.values()) != 100:
        raise PackageError("format", f"{where}: percentages sum to {sum(routes.values())}")
    return dict(sorted(routes.items(), key=lambda item: (-item[1], item[0])))


def _from_file(alias: str, table_path: Path, packages_dir: Path) -> Assignment:
    try:
        table = json.loads(table_path.read_text())
    except (OSError, ValueError) as exc:
        raise PackageError("format", f"alias table {table_path}: {exc}") from exc
    entry = table.get(alias) if isinstance(table, dict) else None
    if isinstance(entry, str):  # {"alias": "file.fcpkg"}
        return Assignment(alias, (Route(None, 100, _under(table_path.parent, entry)),), "file")
    if not isinstance(entry, dict):
        raise PackageError("format", f"alias {alias!r} is not in {table_path}")
    routes = _routes(entry.get("routes"), f"{table_path}: {alias}.routes")
    named = entry.get("packages") or {}
    files = {str(v): _under(table_path.parent, str(p)) for v, p in dict(named).items()}
    return Assignment(alias, _local(routes, files, packages_dir, str(table_path)), "file")


def _under(base: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base / path


def _local(
    routes: Mapping[str, int], files: Mapping[str, Path], directory: Path, where: str
) -> tuple[Route, ...]:
    """Each version's package: named in ``files``, else found in ``directory`` by version."""
    by_version: dict[str, Path] | None = None
    out = []
    for version, percent in routes.items():
        path = files.get(version)
        if path is None:
            by_version = by_version if by_version is not None else _versions_in(directory)
            path = by_version.get(version)
        if path is None:
            raise PackageError(
                "format",
                f"alias routes {percent}% to version {version} ({where}) but no package of it "
                f"is in {directory} (found versions {sorted(by_version or {})})",
            )
        out.append(Route(version, percent, path))
    return tuple(out)


def _versions_in(directory: Path) -> dict[str, Path]:
    from edge_agent.package import read_package

    found: dict[str, Path] = {}
    for path in sorted(directory.glob("*.fcpkg")):
        try:
            manifest = read_package(path.read_bytes())[0]
        except PackageError:
            continue  # not readable: open_model names the problem if it is ever chosen
        found.setdefault(manifest.model_version, path)
    return found


def _from_api(alias: str, env: Mapping[str, str], packages_dir: Path) -> Assignment:
    import urllib.parse  # only containers that resolve over the API pay for urllib

    base = env["FLEETCAST_API_URL"].rstrip("/")
    token = env.get("FLEETCAST_API_TOKEN", "")
    view = json.loads(_get(f"{base}/api/v1/functions/aliases/{urllib.parse.quote(alias)}", token))
    cache = Path(env.get("FLEETCAST_PACKAGE_CACHE", "/tmp/fleetcast/packages"))
    profile = env.get("FLEETCAST_PROFILE") or None
    routes = []
    for version, percent in _routes(view.get("routes"), f"alias {alias}").items():
        sha = _choose(alias, version, dict(view.get("packages", {}).get(version) or {}), profile)
        path = packages_dir / f"{sha}.fcpkg"
        if not path.is_file():
            path = _download(base, token, sha, cache)
        routes.append(Route(version, percent, path, sha))
    return Assignment(alias, tuple(routes), "api")


def _choose(alias: str, version: str, by_profile: Mapping[str, str], profile: str | None) -> str:
    if profile is not None:
        if profile not in by_profile:
            raise PackageError(
                "profile",
                f"alias {alias}: version {version} has no package for FLEETCAST_PROFILE="
                f"{profile} (it has {sorted(by_profile)})",
            )
        return by_profile[profile]
    if len(by_profile) != 1:
        raise PackageError(
            "profile",
            f"alias {alias}: version {version} has packages for {sorted(by_profile)}: "
            "set FLEETCAST_PROFILE to choose",
        )
    return next(iter(by_profile.values()))


def _download(base: str, token: str, sha: str, cache: Path) -> Path:
    target = cache / f"{sha}.fcpkg"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha:
        return target
    data = _get(f"{base}/api/v1/packages/{sha}/file", token)
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise PackageError("hash", f"package {sha} downloaded with sha256 {got}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def _get(url: str, token: str, timeout: float = 10.0) -> bytes:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (http/https)
            data: bytes = answer.read()
            return data
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise PackageError("format", f"GET {url}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PackageError("format", f"GET {url}: {exc}") from exc
