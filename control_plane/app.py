"""The app factory: the store, the change notifier and the services, built once per process.

``create_app(settings)`` returns a Flask app whose ``extensions["fleetcast"]``
is the :class:`Fleetcast` container (Flask's own pattern for shared state): the
REST API's blueprints read it with :func:`services_of`, and ``fleetcast serve``
hands the same container to the gRPC servicer and the MQTT bridge, so every
transport calls the same services over the same repositories.

Domain errors are mapped to HTTP in one place, ``control_plane/api/errors.py``
(RFC 7807 problem+json), registered on the app here; the gRPC mapping lives in
``transport/grpc_server.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from control_plane.crypto import SampleKeyring, load_sample_keyring
from control_plane.files import make_private_dir, private_file
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.services.commands import CommandService
from control_plane.services.devices import DeviceService
from control_plane.services.enrollment import EnrollmentService
from control_plane.services.ingest import IngestService
from control_plane.services.keys import KeyService
from control_plane.services.packages import PackageService
from control_plane.settings import Settings
from control_plane.signing import load_fleet_public_key
from control_plane.store.factory import open_repositories
from control_plane.store.notify import ChangeNotifier
from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)

EXTENSION = "fleetcast"
OLD_STORE_FILE = "fleetcast.db"


@dataclass
class Fleetcast:
    """Everything a request handler needs: the repositories and the services over them."""

    settings: Settings
    repos: Repositories
    clock: Clock
    devices: DeviceService
    enrollment: EnrollmentService
    commands: CommandService
    packages: PackageService
    ingest: IngestService
    keys: KeyService

    @property
    def notifier(self) -> ChangeNotifier:
        return self.repos.notifier

    def close(self) -> None:
        self.repos.close()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store URL (None for PostgreSQL and ``:memory:``)."""
    if url.startswith(("postgresql://", "postgres://")) or url in (
        ":memory:",
        "sqlite://",
        "sqlite:///:memory:",
    ):
        return None
    return Path(url.removeprefix("sqlite:///"))


def sample_keyring(settings: Settings) -> SampleKeyring:
    """The keys captured samples are sealed with (``control_plane/crypto.py``)."""
    return load_sample_keyring(settings.key_dir, key_file=settings.samples_key_file)


def open_store(settings: Settings) -> Repositories:
    """The repositories of ``settings.store_url``; a SQLite file and its WAL are private."""
    url = settings.store_url
    path = sqlite_path(url)
    if path is not None:
        make_private_dir(path.parent)
        private_file(path)
        old = settings.data_dir / OLD_STORE_FILE
        if settings.store is None and old.exists():
            logger.warning(
                "%s is a store of an older fleetcast and is not read: import it with "
                "`fleetcast store import-old %s` (docs/store.md, 'Old stores')",
                old,
                old,
            )
    repos = open_repositories(url, sample_keys=sample_keyring(settings))
    if path is not None:
        for suffix in ("-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                sidecar.chmod(0o600)
    return repos


def build_services(
    settings: Settings, repos: Repositories | None = None, clock: Clock = time.time
) -> Fleetcast:
    """The services over ``repos`` (opened from the settings when not given)."""
    # an explicit key is pinned; otherwise the key directory's current and previous keys are
    # read at each registration, so a rotation (services/keys.py) takes effect at once
    public_key = (
        load_fleet_public_key(settings.public_key) if settings.public_key is not None else None
    )
    repos = repos if repos is not None else open_store(settings)
    devices = DeviceService(repos, clock)
    commands = CommandService(repos, clock)
    keys = KeyService(repos, AuditService(repos.audit, clock), commands, settings.key_dir, clock)
    return Fleetcast(
        settings=settings,
        repos=repos,
        clock=clock,
        devices=devices,
        enrollment=EnrollmentService(repos, clock),
        commands=commands,
        packages=PackageService(
            repos, public_key, settings.catalog_dir, clock, trusted=keys.trusted_public_keys
        ),
        ingest=IngestService(repos, devices, clock),
        keys=keys,
    )


def create_app(
    settings: Settings, *, repos: Repositories | None = None, clock: Clock = time.time
) -> Flask:
    """The Flask app holding the services (``app.extensions["fleetcast"]``).

    Blueprints are registered on it by the caller (``control_plane/api``); the
    store stays open until ``services_of(app).close()``.
    """
    app = Flask("control_plane")
    app.extensions[EXTENSION] = build_services(settings, repos, clock)
    from control_plane.api.errors import register_error_handlers

    register_error_handlers(app)
    return app


def services_of(app: Flask) -> Fleetcast:
    """The services container of an app made by :func:`create_app`."""
    services = app.extensions[EXTENSION]
    assert isinstance(services, Fleetcast)
    return services
