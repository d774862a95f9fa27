"""``fleetcast models …`` and ``fleetcast versions …``: the catalog over the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from control_plane.api.client import ApiClient
from control_plane.cli_api import JOB_COLUMNS, api_command, emit, follow_job

# ------------------------------------------------------------------ models, versions


@click.group()
def models() -> None:
    """Models in the catalog."""


@models.command("list")
@click.option("--owner")
@api_command
def models_list(client: ApiClient, as_json: bool, owner: str | None) -> None:
    """List models."""
    rows = client.pages("/api/v1/models", {"owner": owner})
    emit(rows, ["name", "owner", "description", "created_at"], as_json)


@models.command("create")
@click.argument("name")
@click.option("--owner", required=True)
@click.option("--description", default="")
@api_command
def models_create(
    client: ApiClient, as_json: bool, name: str, owner: str, description: str
) -> None:
    """Add a model."""
    body = {"name": name, "owner": owner, "description": description}
    model = client.request("POST", "/api/v1/models", body=body)
    emit([model], ["name", "owner", "description", "created_at"], as_json)


@models.command("show")
@click.argument("name")
@api_command
def models_show(client: ApiClient, as_json: bool, name: str) -> None:
    """One model and its aliases."""
    model = client.request("GET", f"/api/v1/models/{name}")
    aliases = client.request("GET", f"/api/v1/models/{name}/aliases")["items"]
    model["aliases"] = {a["alias"]: a["version"] for a in aliases}
    emit([model], ["name", "owner", "description", "aliases", "created_at"], as_json)


VERSION_COLUMNS = ["model", "version", "stage", "source_sha256", "created_at"]


@click.group()
def versions() -> None:
    """Versions of a model: register, stage, alias, compile."""


@versions.command("list")
@click.argument("model")
@click.option("--stage")
@api_command
def versions_list(client: ApiClient, as_json: bool, model: str, stage: str | None) -> None:
    """A model's versions."""
    emit(
        client.pages(f"/api/v1/models/{model}/versions", {"stage": stage}), VERSION_COLUMNS, as_json
    )


@versions.command("show")
@click.argument("model")
@click.argument("version")
@api_command
def versions_show(client: ApiClient, as_json: bool, model: str, version: str) -> None:
    """One version with its card."""
    found = client.request("GET", f"/api/v1/models/{model}/versions/{version}")
    emit([found], [*VERSION_COLUMNS, "card"], as_json)


def _upload(client: ApiClient, path: Path | None) -> str | None:
    if path is None:
        return None
    answer = client.request("POST", "/api/v1/uploads", data=path.read_bytes())
    return str(answer["sha256"])


FILE = click.Path(path_type=Path, exists=True, dir_okay=False)


@versions.command("register")
@click.argument("model")
@click.argument("version")
@click.option("--source", type=FILE, help="the model: .onnx or a torch.export .pt2")
@click.option("--calibration", type=FILE, help=".npz, one array per input")
@click.option("--validation", type=FILE, help="held-out .npz")
@click.option("--reference", type=FILE, help=".npz for reference statistics")
@click.option("--labels", type=FILE, help=".npz labels of the validation rows")
@click.option("--intended-use", required=True)
@click.option("--training-data", required=True, help="a reference to the training data")
@click.option("--owner", required=True)
@click.option("--metric", "metrics", multiple=True, help="name=value (repeat)")
@api_command
def versions_register(
    client: ApiClient,
    as_json: bool,
    model: str,
    version: str,
    source: Path | None,
    calibration: Path | None,
    validation: Path | None,
    reference: Path | None,
    labels: Path | None,
    intended_use: str,
    training_data: str,
    owner: str,
    metrics: tuple[str, ...],
) -> None:
    """Upload the files and register an immutable version with its model card."""
    card_metrics = {}
    for item in metrics:
        key, _, value = item.partition("=")
        try:
            card_metrics[key] = float(value)
        except ValueError:
            raise click.BadParameter(
                f"{item!r}: expected name=number", param_hint="--metric"
            ) from None
    data = {
        role: _upload(client, path)
        for role, path in (
            ("calibration", calibration),
            ("validation", validation),
            ("reference", reference),
            ("labels", labels),
        )
        if path is not None
    }
    body: dict[str, Any] = {
        "version": version,
        "card": {
            "intended_use": intended_use,
            "training_data": training_data,
            "owner": owner,
            "metrics": card_metrics,
        },
        "data": data,
    }
    if source is not None:
        body["source_sha256"] = _upload(client, source)
        body["source_format"] = "pt2" if source.suffix == ".pt2" else "onnx"
    created = client.request("POST", f"/api/v1/models/{model}/versions", body=body)
    emit([created], VERSION_COLUMNS, as_json)


@versions.command("stage")
@click.argument("model")
@click.argument("version")
@click.argument("stage")
@click.option("--reason", default="")
@click.option(
    "--force",
    is_flag=True,
    help="retired: roll back the devices still running it (refused, naming them, without)",
)
@api_command
def versions_stage(
    client: ApiClient,
    as_json: bool,
    model: str,
    version: str,
    stage: str,
    reason: str,
    force: bool,
) -> None:
    """Move a version to STAGE (compiled, staged, production, deprecated, retired)."""
    moved = client.request(
        "POST",
        f"/api/v1/models/{model}/versions/{version}/stage",
        body={"stage": stage, "reason": reason, "force": force},
    )
    emit([moved], VERSION_COLUMNS, as_json)


@versions.command("alias")
@click.argument("model")
@click.argument("alias")
@click.argument("version")
@api_command
def versions_alias(client: ApiClient, as_json: bool, model: str, alias: str, version: str) -> None:
    """Point ALIAS (production, staging, …) at VERSION."""
    moved = client.request(
        "PUT", f"/api/v1/models/{model}/aliases/{alias}", body={"version": version}
    )
    emit([moved], ["model", "alias", "version", "previous_version"], as_json)


@versions.command("compile")
@click.argument("model")
@click.argument("version")
@click.option("-p", "--profile", "profiles", multiple=True, help="profile id (default: all)")
@click.option("--wait/--no-wait", default=True, help="Follow the job with a progress bar.")
@api_command
def versions_compile(
    client: ApiClient,
    as_json: bool,
    model: str,
    version: str,
    profiles: tuple[str, ...],
    wait: bool,
) -> None:
    """Start a compile job on the server and (by default) follow it to the end."""
    body = {"model": model, "version": version, "profiles": list(profiles)}
    job = client.request("POST", "/api/v1/compile-jobs", body=body)
    if wait:
        job = follow_job(client, job["id"], quiet=as_json)
    emit([job], JOB_COLUMNS, as_json)
    if job["state"] == "failed":
        raise click.ClickException(f"compile job {job['id']} failed: {job['error']}")


def _register_deploy() -> None:
    """``fleetcast versions deploy`` is ``fleetcast deploy`` (one implementation)."""
    from control_plane.cli_fleet import deploy

    versions.add_command(deploy, "deploy")


_register_deploy()
