"""The model catalog: models, immutable versions with their card, and aliases that move."""

from __future__ import annotations

from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.store.notify import CATALOG
from control_plane.store.records import (
    DEFAULT_LIMIT,
    STAGES,
    Alias,
    Model,
    ModelCard,
    ModelVersion,
    Page,
)
from control_plane.store.sql.base import Database, Row, Tx, dumps, loads, page


def _check_name(what: str, name: str) -> str:
    if (
        not 1 <= len(name) <= 128
        or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        or not name.isascii()
    ):
        raise InvalidInput(f"{what} {name!r}: use 1-128 letters, digits, '.', '_' or '-'")
    return name


class SqlModelRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, name: str, description: str, owner: str, at: float) -> Model:
        _check_name("model name", name)
        with self.db.transaction() as tx:
            if not tx.execute(
                "INSERT INTO models (name, description, owner, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                [name, description, owner, at],
            ):
                raise Conflict(f"model {name!r} exists")
            tx.changed(CATALOG)
            return Model(**_model_row(tx, name))

    def get(self, name: str) -> Model:
        with self.db.transaction() as tx:
            return Model(**_model_row(tx, name))

    def list(
        self, *, owner: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[Model]:
        with self.db.transaction() as tx:
            rows, more = page(tx, "SELECT * FROM models", {"owner": owner}, "name", limit, offset)
            return Page([Model(**r) for r in rows], more)


class SqlVersionRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self, model: str, version: str, card: ModelCard, source_sha256: str | None, at: float
    ) -> ModelVersion:
        _check_name("version", version)
        with self.db.transaction() as tx:
            _model_row(tx, model)
            if not tx.execute(
                "INSERT INTO model_versions (model, version, card_json, source_sha256, stage,"
                " created_at, stage_changed_at) VALUES (?, ?, ?, ?, 'registered', ?, ?)"
                " ON CONFLICT (model, version) DO NOTHING",
                [model, version, dumps(_card_json(card)), source_sha256, at, at],
            ):
                raise Conflict(
                    f"version {version!r} of model {model!r} exists (versions are immutable)"
                )
            tx.changed(CATALOG)
            return _version(_version_row(tx, model, version))

    def get(self, model: str, version: str) -> ModelVersion:
        with self.db.transaction() as tx:
            return _version(_version_row(tx, model, version))

    def list(
        self, model: str, *, stage: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[ModelVersion]:
        if stage is not None and stage not in STAGES:
            raise InvalidInput(f"stage {stage!r}: expected one of {list(STAGES)}")
        with self.db.transaction() as tx:
            _model_row(tx, model)
            rows, more = page(
                tx,
                "SELECT * FROM model_versions",
                {"model": model, "stage": stage},
                "created_at, version",
                limit,
                offset,
            )
            return Page([_version(r) for r in rows], more)

    def set_stage(
        self, model: str, version: str, expected: str, stage: str, at: float
    ) -> ModelVersion:
        if stage not in STAGES:
            raise InvalidInput(f"stage {stage!r}: expected one of {list(STAGES)}")
        with self.db.transaction() as tx:
            current = _version(_version_row(tx, model, version))
            if not tx.execute(
                "UPDATE model_versions SET stage = ?, stage_changed_at = ?"
                " WHERE model = ? AND version = ? AND stage = ?",
                [stage, at, model, version, expected],
            ):
                raise Conflict(
                    f"{model} {version} is {current.stage!r}, not {expected!r}: it moved meanwhile"
                )
            tx.changed(CATALOG)
            return _version(_version_row(tx, model, version))


class SqlAliasRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def set(self, model: str, alias: str, version: str, at: float) -> Alias:
        _check_name("alias", alias)
        with self.db.transaction() as tx:
            _version_row(tx, model, version)
            old = tx.row("SELECT * FROM aliases WHERE model = ? AND alias = ?", [model, alias])
            if old is None:
                tx.execute(
                    "INSERT INTO aliases (model, alias, version, previous_version, updated_at)"
                    " VALUES (?, ?, ?, NULL, ?)",
                    [model, alias, version, at],
                )
            elif old["version"] != version:
                tx.execute(
                    "UPDATE aliases SET version = ?, previous_version = ?, updated_at = ?"
                    " WHERE model = ? AND alias = ?",
                    [version, old["version"], at, model, alias],
                )
            tx.changed(CATALOG)
            return Alias(**_alias_row(tx, model, alias))

    def get(self, model: str, alias: str) -> Alias:
        with self.db.transaction() as tx:
            return Alias(**_alias_row(tx, model, alias))

    def list(self, model: str) -> list[Alias]:
        with self.db.transaction() as tx:
            _model_row(tx, model)
            rows = tx.rows("SELECT * FROM aliases WHERE model = ? ORDER BY alias", [model])
            return [Alias(**r) for r in rows]

    def delete(self, model: str, alias: str) -> None:
        with self.db.transaction() as tx:
            if not tx.execute("DELETE FROM aliases WHERE model = ? AND alias = ?", [model, alias]):
                raise NotFound(f"model {model!r} has no alias {alias!r}")
            tx.changed(CATALOG)


def _card_json(card: ModelCard) -> dict[str, object]:
    return {
        "intended_use": card.intended_use,
        "training_data": card.training_data,
        "owner": card.owner,
        "metrics": {k: float(v) for k, v in card.metrics.items()},
    }


def _model_row(tx: Tx, name: str) -> Row:
    row = tx.row("SELECT * FROM models WHERE name = ?", [name])
    if row is None:
        raise NotFound(f"model {name!r} is not in the catalog")
    return row


def _version_row(tx: Tx, model: str, version: str) -> Row:
    row = tx.row("SELECT * FROM model_versions WHERE model = ? AND version = ?", [model, version])
    if row is None:
        _model_row(tx, model)
        raise NotFound(f"model {model!r} has no version {version!r}")
    return row


def _alias_row(tx: Tx, model: str, alias: str) -> Row:
    row = tx.row("SELECT * FROM aliases WHERE model = ? AND alias = ?", [model, alias])
    if row is None:
        raise NotFound(f"model {model!r} has no alias {alias!r}")
    return row


def _version(row: Row) -> ModelVersion:
    card = loads(row["card_json"])
    return ModelVersion(
        model=row["model"],
        version=row["version"],
        card=ModelCard(
            intended_use=card["intended_use"],
            training_data=card["training_data"],
            owner=card["owner"],
            metrics=card["metrics"],
        ),
        source_sha256=row["source_sha256"],
        stage=row["stage"],
        created_at=row["created_at"],
        stage_changed_at=row["stage_changed_at"],
    )
