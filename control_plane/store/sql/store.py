"""Every repository over one :class:`Database`: what both backends hand to the services."""

from __future__ import annotations

from control_plane.crypto import SampleKeyring
from control_plane.store import repos
from control_plane.store.notify import ChangeNotifier
from control_plane.store.sql.access import SqlApiTokenRepo, SqlCompileJobRepo
from control_plane.store.sql.alert_rules import SqlAlertRuleRepo
from control_plane.store.sql.alerts import SqlAlertRepo
from control_plane.store.sql.base import Database
from control_plane.store.sql.catalog import SqlAliasRepo, SqlModelRepo, SqlVersionRepo
from control_plane.store.sql.devices import SqlDeviceRepo, SqlEnrollmentTokenRepo
from control_plane.store.sql.fleet import (
    SqlAuditRepo,
    SqlCommandRepo,
    SqlPackageRepo,
    SqlUploadRepo,
)
from control_plane.store.sql.function_aliases import SqlFunctionAliasRepo
from control_plane.store.sql.insights import SqlInsightRepo
from control_plane.store.sql.monitoring import SqlMonitoringRepo
from control_plane.store.sql.retention import SqlRetentionRepo
from control_plane.store.sql.rollouts import SqlRolloutRepo


class SqlRepositories:
    """Implements :class:`control_plane.store.repos.Repositories` over ``db`` (migrated here)."""

    def __init__(
        self, db: Database, *, migrate: bool = True, sample_keys: SampleKeyring | None = None
    ) -> None:
        """``sample_keys`` seal captured samples at rest; None: a random in-memory key (tests
        and ``:memory:`` stores; ``fleetcast serve`` passes the data directory's keyring)."""
        self.db = db
        self.sample_keys = sample_keys or SampleKeyring.ephemeral()
        if migrate:
            db.migrate()
        self.devices: repos.DeviceRepo = SqlDeviceRepo(db)
        self.enrollment_tokens: repos.EnrollmentTokenRepo = SqlEnrollmentTokenRepo(db)
        self.commands: repos.CommandRepo = SqlCommandRepo(db)
        self.packages: repos.PackageRepo = SqlPackageRepo(db)
        self.uploads: repos.UploadRepo = SqlUploadRepo(db, self.sample_keys)
        self.monitoring: repos.MonitoringRepo = SqlMonitoringRepo(db, self.sample_keys)
        self.insights: repos.InsightRepo = SqlInsightRepo(db, self.sample_keys)
        self.audit: repos.AuditRepo = SqlAuditRepo(db)
        self.models: repos.ModelRepo = SqlModelRepo(db)
        self.versions: repos.VersionRepo = SqlVersionRepo(db)
        self.aliases: repos.AliasRepo = SqlAliasRepo(db)
        self.function_aliases: repos.FunctionAliasRepo = SqlFunctionAliasRepo(db)
        self.api_tokens: repos.ApiTokenRepo = SqlApiTokenRepo(db)
        self.compile_jobs: repos.CompileJobRepo = SqlCompileJobRepo(db)
        self.rollouts: repos.RolloutRepo = SqlRolloutRepo(db)
        self.alerts: repos.AlertRepo = SqlAlertRepo(db)
        self.alert_rules: repos.AlertRuleRepo = SqlAlertRuleRepo(db)
        self.retention: repos.RetentionRepo = SqlRetentionRepo(db)

    @property
    def notifier(self) -> ChangeNotifier:
        return self.db.notifier

    def schema_version(self) -> int:
        return self.db.schema_version()

    def close(self) -> None:
        self.db.close()


def _conforms(store: SqlRepositories) -> repos.Repositories:
    """mypy checks here that the SQL repositories implement every Protocol."""
    return store
