"""Every route × every caller (no token, a device credential, viewer, operator, admin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from api_support import PROFILE, Api, make_api, seed, seed_deployable, seed_monitored

from control_plane.services.tokens import Principal

TARGET = {"kind": "devices", "selector": {"site": "lab"}}
CARD = {"intended_use": "digits", "training_data": "sklearn digits", "owner": "ml"}


@dataclass(frozen=True)
class Route:
    method: str
    rule: str  # as in the app's url_map
    url: str  # with the seeded names filled in ({package}, {job}, {token})
    role: str | None  # the least role allowed; None: public
    ok: int
    kwargs: dict[str, Any] = field(default_factory=dict)


ROUTES = [
    Route("GET", "/healthz", "/healthz", None, 200),
    Route("GET", "/readyz", "/readyz", None, 200),
    Route("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", None, 200),
    Route("GET", "/metrics", "/metrics", None, 200),
    Route("GET", "/api/v1/models", "/api/v1/models", "viewer", 200),
    Route(
        "POST",
        "/api/v1/models",
        "/api/v1/models",
        "operator",
        201,
        {"json": {"name": "kws", "owner": "ml"}},
    ),
    Route("GET", "/api/v1/models/<model>", "/api/v1/models/digits", "viewer", 200),
    Route(
        "GET", "/api/v1/models/<model>/versions", "/api/v1/models/digits/versions", "viewer", 200
    ),
    Route(
        "POST",
        "/api/v1/models/<model>/versions",
        "/api/v1/models/digits/versions",
        "operator",
        201,
        {"json": {"version": "3", "card": CARD}},
    ),
    Route(
        "GET",
        "/api/v1/models/<model>/versions/<version>",
        "/api/v1/models/digits/versions/1",
        "viewer",
        200,
    ),
    Route(
        "POST",
        "/api/v1/models/<model>/versions/<version>/stage",
        "/api/v1/models/digits/versions/1/stage",
        "operator",
        200,
        {"json": {"stage": "compiled"}},
    ),
    Route("GET", "/api/v1/models/<model>/aliases", "/api/v1/models/digits/aliases", "viewer", 200),
    Route(
        "GET",
        "/api/v1/models/<model>/aliases/<alias>",
        "/api/v1/models/digits/aliases/staging",
        "viewer",
        200,
    ),
    Route(
        "PUT",
        "/api/v1/models/<model>/aliases/<alias>",
        "/api/v1/models/digits/aliases/production",
        "operator",
        200,
        {"json": {"version": "1"}},
    ),
    Route(
        "DELETE",
        "/api/v1/models/<model>/aliases/<alias>",
        "/api/v1/models/digits/aliases/staging",
        "operator",
        204,
    ),
    Route(
        "POST",
        "/api/v1/uploads",
        "/api/v1/uploads",
        "operator",
        201,
        {"data": b"bytes", "content_type": "application/octet-stream"},
    ),
    Route("GET", "/api/v1/packages", "/api/v1/packages", "viewer", 200),
    Route("GET", "/api/v1/packages/<sha256>", "/api/v1/packages/{package}", "viewer", 200),
    Route(
        "POST",
        "/api/v1/compile-jobs",
        "/api/v1/compile-jobs",
        "operator",
        202,
        {"json": {"model": "digits", "version": "2", "profiles": [PROFILE]}},
    ),
    Route("GET", "/api/v1/compile-jobs", "/api/v1/compile-jobs", "viewer", 200),
    Route("GET", "/api/v1/compile-jobs/<job_id>", "/api/v1/compile-jobs/{job}", "viewer", 200),
    Route(
        "POST",
        "/api/v1/compile-jobs/<job_id>/cancel",
        "/api/v1/compile-jobs/{job}/cancel",
        "operator",
        200,
    ),
    Route("GET", "/api/v1/tokens", "/api/v1/tokens", "admin", 200),
    Route(
        "POST",
        "/api/v1/tokens",
        "/api/v1/tokens",
        "admin",
        201,
        {"json": {"name": "ci", "role": "operator"}},
    ),
    Route("GET", "/api/v1/tokens/<token_id>", "/api/v1/tokens/{token}", "admin", 200),
    Route("DELETE", "/api/v1/tokens/<token_id>", "/api/v1/tokens/{token}", "admin", 200),
    Route("GET", "/api/v1/keys", "/api/v1/keys", "admin", 200),
    Route("POST", "/api/v1/keys/rotate", "/api/v1/keys/rotate", "admin", 201, {"json": {}}),
    Route(
        "POST",
        "/api/v1/keys/<key_id>/retire",
        "/api/v1/keys/{old_key}/retire",
        "admin",
        200,
        {"json": {"force": True}},
    ),
    Route("GET", "/api/v1/audit", "/api/v1/audit", "viewer", 200),
    Route("GET", "/api/v1/whoami", "/api/v1/whoami", "viewer", 200),
    Route("GET", "/api/v1/devices", "/api/v1/devices?selector=site=lab", "viewer", 200),
    Route(
        "POST",
        "/api/v1/deployments",
        "/api/v1/deployments",
        "operator",
        202,
        {"json": {"model": "digits", "version": "9", "selector": {"site": "lab"}}},
    ),
    Route("GET", "/api/v1/devices/<device_id>", "/api/v1/devices/cam-1", "viewer", 200),
    Route(
        "PATCH",
        "/api/v1/devices/<device_id>",
        "/api/v1/devices/cam-2",
        "operator",
        200,
        {"json": {"labels": {"site": "lab", "floor": "2"}, "profile_id": PROFILE}},
    ),
    Route(
        "POST",
        "/api/v1/devices/<device_id>/revoke",
        "/api/v1/devices/cam-2/revoke",
        "operator",
        200,
    ),
    Route(
        "POST",
        "/api/v1/enrollment-tokens",
        "/api/v1/enrollment-tokens",
        "operator",
        201,
        {"json": {"device_id": "cam-9", "ttl_seconds": 600}},
    ),
    Route(
        "POST",
        "/api/v1/enrollment-tokens/batch",
        "/api/v1/enrollment-tokens/batch",
        "operator",
        201,
        {"json": {"device_ids": ["cam-10", "cam-11"], "ttl_seconds": 600}},
    ),
    Route(
        "POST",
        "/api/v1/packages",
        "/api/v1/packages",
        "operator",
        201,
        {"data": "@signed_package", "content_type": "application/octet-stream"},
    ),
    Route("GET", "/api/v1/drift", "/api/v1/drift?model=digits&version=1", "viewer", 200),
    Route(
        "POST",
        "/api/v1/feedback",
        "/api/v1/feedback",
        "operator",
        200,
        {"json": {"labels": [{"prediction_id": "p-1", "label": 1}]}},
    ),
    Route("GET", "/api/v1/accuracy", "/api/v1/accuracy?model=digits&version=1", "viewer", 200),
    Route("GET", "/api/v1/alerts", "/api/v1/alerts", "viewer", 200),
    Route(
        "GET",
        "/api/v1/predictions/<prediction_id>/explanation",
        "/api/v1/predictions/p-unknown/explanation",
        "viewer",
        404,
    ),
    Route("GET", "/api/v1/attributions", "/api/v1/attributions?model=digits", "viewer", 200),
    Route("GET", "/api/v1/lineage", f"/api/v1/lineage?dataset={'a' * 64}", "viewer", 404),
    Route("GET", "/api/v1/lineage/openlineage", "/api/v1/lineage/openlineage", "viewer", 200),
    Route("POST", "/api/v1/alerts/evaluate", "/api/v1/alerts/evaluate", "operator", 200),
    Route("GET", "/api/v1/alerts/deliveries", "/api/v1/alerts/deliveries", "viewer", 200),
    Route("GET", "/api/v1/alerts/<alert_id>", "/api/v1/alerts/{alert}", "viewer", 200),
    Route(
        "POST",
        "/api/v1/alerts/<alert_id>/acknowledge",
        "/api/v1/alerts/{alert}/acknowledge",
        "operator",
        200,
    ),
    Route(
        "POST",
        "/api/v1/rollouts",
        "/api/v1/rollouts",
        "operator",
        201,
        {"json": {"model": "digits", "version": "9", "target": TARGET, "waves": [{"count": 1}]}},
    ),
    Route("GET", "/api/v1/rollouts", "/api/v1/rollouts", "viewer", 200),
    Route("GET", "/api/v1/rollouts/<rollout_id>", "/api/v1/rollouts/{running}", "viewer", 200),
    *(
        Route(
            "POST",
            f"/api/v1/rollouts/<rollout_id>/{verb}",
            f"/api/v1/rollouts/{{{seeded}}}/{verb}",
            "operator",
            200,
            {"json": {"reason": "rbac"}},
        )
        for verb, seeded in [
            ("pause", "running"),
            ("resume", "paused"),
            ("abort", "running"),
            ("rollback", "running"),
            ("approve", "awaiting"),
        ]
    ),
    Route("GET", "/api/v1/functions/aliases", "/api/v1/functions/aliases", "viewer", 200),
    Route(
        "GET",
        "/api/v1/functions/aliases/<name>",
        "/api/v1/functions/aliases/scorer:live",
        "viewer",
        200,
    ),
    Route(
        "PUT",
        "/api/v1/functions/aliases/<name>",
        "/api/v1/functions/aliases/scorer:live",
        "operator",
        200,
        {"json": {"model": "digits", "routes": {"1": 90, "2": 10}}},
    ),
    Route("GET", "/api/v1/alert-rules", "/api/v1/alert-rules?model=digits", "viewer", 200),
    Route(
        "PUT",
        "/api/v1/alert-rules/<model>/<rule>",
        "/api/v1/alert-rules/digits/error_rate",
        "operator",
        200,
        {"json": {"threshold": 0.01}},
    ),
    Route(
        "DELETE",
        "/api/v1/alert-rules/<model>/<rule>",
        "/api/v1/alert-rules/digits/silent_devices",
        "operator",
        200,
    ),
    Route(
        "GET",
        "/api/v1/packages/<sha256>/file",
        "/api/v1/packages/{package_file}/file",
        "viewer",
        200,
    ),
]
CALLERS = [None, "device", "viewer", "operator", "admin"]
RANK = {"viewer": 0, "operator": 1, "admin": 2}


def expected_status(route: Route, caller: str | None) -> int:
    if route.role is None:
        return route.ok
    if caller is None:
        return 401
    if caller == "device":
        return 403
    return route.ok if RANK[caller] >= RANK[route.role] else 403


@pytest.fixture
def api(tmp_path: Path) -> Api:
    api = make_api(tmp_path)
    seed(api)
    seed_deployable(api)
    seed_monitored(api)
    seed_rollouts(api)
    seed_alert(api)
    seed_function_alias(api, tmp_path)
    seed_keys(api)
    seed_alert_rule(api)
    return api


def seed_alert_rule(api: Api) -> None:
    """A stored rule disabling silent_devices on digits (the DELETE route needs one)."""
    api.context.alerts.rules.set("digits", "silent_devices", {}, False, Principal("s", "admin"))


def seed_alert(api: Api) -> None:
    """A firing alert on digits 1 (the acknowledge route needs one)."""
    from control_plane.core.alerts import Alert, AlertRule, labels_of, short_id

    rule = AlertRule("feature_drift", "drift_features", 1, ">=", gates_rollout=True)
    labels = labels_of({"model": "digits", "version": "1", "group": "all"})
    alert = Alert(rule, labels, "firing", since=10.0, value=2.0, fired_at=10.0)
    api.repos.alerts.save([alert], [], [], at=10.0)
    api.seeded["alert"] = short_id(alert)


def seed_function_alias(api: Api, tmp_path: Path) -> None:
    """A function alias on digits 1, and a package whose file exists (the download route)."""
    import hashlib

    from control_plane.store.records import Package

    api.context.function_aliases.set("scorer:live", "digits", {"1": 100}, Principal("s", "admin"))
    data = b"a signed package, as far as this route cares"
    path = tmp_path / "package.fcpkg"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    api.repos.packages.put(Package(sha, "digits-2-x86", "digits", "2", PROFILE, 1, 9, str(path),
                                   {}, 5.0))  # fmt: skip
    api.seeded["package_file"] = sha


def seed_keys(api: Api) -> None:
    """A signing key, rotated once: the old one is a previous key (cam-2 has not acked)."""
    from control_plane.signing import generate_keypair

    generate_keypair(api.context.keys.key_dir)
    api.seeded["old_key"] = api.context.keys.rotate(Principal("seed", "admin")).previous_key_id
    api.seeded["signed_package"] = str(signed_package(api))


def signed_package(api: Api) -> Path:
    """A synthetic package of synthetic 1 (registered here), signed with the current key."""
    import hashlib
    import sys

    from control_plane.compiler.package import build_package
    from control_plane.signing import PRIVATE_NAME, load_private_key
    from edge_agent.package import key_id

    sys.path.insert(0, str(Path(__file__).parents[2] / "edge_agent"))
    from manifests import make_manifest

    key = load_private_key(api.context.keys.key_dir / PRIVATE_NAME)
    model = b"synthetic model bytes"
    manifest = make_manifest()
    manifest = manifest.model_copy(
        update={
            "key_id": key_id(key.public_key()),
            "model_file": manifest.model_file.model_copy(
                update={"sha256": hashlib.sha256(model).hexdigest(), "size_bytes": len(model)}
            ),
        }
    )
    card = {"intended_use": "tests", "training_data": "none", "owner": "ml"}
    assert (
        api.call("POST", "/api/v1/models", json={"name": "synthetic", "owner": "ml"}).status_code
        == 201
    )
    made = api.call(
        "POST", "/api/v1/models/synthetic/versions", json={"version": "1", "card": card}
    )
    assert made.status_code == 201, made.json
    path = api.context.keys.key_dir.parent / "synthetic.fcpkg"
    path.write_bytes(build_package(manifest, model, key))
    return path


def seed_rollouts(api: Api) -> None:
    """A running rollout of digits 9, a paused one, one awaiting approval of its first wave."""
    spec = {"model": "digits", "version": "9", "target": TARGET, "waves": [{"percent": 100}]}
    seeder = Principal("seed", "admin")
    rollouts = api.context.rollouts
    api.seeded["running"] = rollouts.create(spec, seeder).id
    paused = api.seeded["paused"] = rollouts.create(spec, seeder).id
    rollouts.act(paused, "pause", seeder)
    api.seeded["awaiting"] = rollouts.create({**spec, "approve_first": True}, seeder).id


def test_the_matrix_covers_every_route(tmp_path: Path) -> None:
    app = make_api(tmp_path).app
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert served == {(r.method, r.rule) for r in ROUTES}


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c or "no-token")
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.rule}")
def test_rbac(api: Api, route: Route, caller: str | None) -> None:
    url = route.url.format(**api.seeded)
    last_audit = api.context.audit.list(limit=1).items[0].id
    kwargs = dict(route.kwargs)
    if isinstance(kwargs.get("data"), str) and kwargs["data"].startswith("@"):
        kwargs["data"] = Path(api.seeded[kwargs["data"][1:]]).read_bytes()
    answer = api.call(route.method, url, caller, **kwargs)
    want = expected_status(route, caller)
    assert answer.status_code == want, answer.get_data(as_text=True)
    if want >= 400:
        assert answer.mimetype == "application/problem+json"
        assert answer.json["status"] == want
        if caller == "device":
            assert "device credentials" in answer.json["detail"]
        assert api.context.audit.list(limit=1).items[0].id == last_audit  # refused: no change
    elif route.method != "GET" and route.role is not None:  # a change: audited as the caller
        newest = api.context.audit.list(limit=1).items[0]
        assert newest.id > last_audit, "a change without an audit entry"
        assert newest.actor == f"{caller}-token"
    else:  # a read changes nothing
        assert api.context.audit.list(limit=1).items[0].id == last_audit
