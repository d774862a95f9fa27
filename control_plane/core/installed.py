"""What each device runs, from the commands it acked (pure, no I/O).

A device's ``deploy`` ack names the package it switched to (``package_id``,
``model_name``); a ``rollback`` ack names the package it went back to (the
model is in the command's body). Replaying the acked commands of a device in
execution order gives the package active per model. A rollback the agent
made on its own (a health breach) is not a command: it shows in the device's
status reports, not here (docs/api.md, "Retiring a version").
"""

from __future__ import annotations

from collections.abc import Iterable

from control_plane.store.records import Command


def active_packages(commands: Iterable[Command]) -> dict[tuple[str, str], str]:
    """``(device id, model) -> package id`` of what each device runs, per model."""
    active: dict[tuple[str, str], str] = {}
    ordered = sorted(commands, key=lambda c: (c.device_id, c.execution_version))
    for command in ordered:
        if command.status != "ok" or command.result is None:
            continue
        package_id = command.result.get("package_id")
        if command.kind in ("deploy", "install"):
            model = command.result.get("model_name")
        elif command.kind == "rollback":
            model = command.body.get("model_name")
        else:
            continue
        if isinstance(model, str) and isinstance(package_id, str) and package_id:
            active[(command.device_id, model)] = package_id
    return active


def devices_running(
    commands: Iterable[Command], model: str, package_ids: Iterable[str]
) -> dict[str, str]:
    """``device id -> package id`` of the devices whose active ``model`` is in ``package_ids``."""
    wanted = set(package_ids)
    return {
        device: package
        for (device, name), package in active_packages(commands).items()
        if name == model and package in wanted
    }
