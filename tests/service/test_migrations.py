"""Our Alembic history on both databases, and Optuna's tables left alone by it."""

from __future__ import annotations

import optuna
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from service import migrate
from service.db import Base, make_engine
from tests.service.conftest import BACKENDS

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.parametrize("empty_db_url", BACKENDS, indirect=True),
]


def revisions() -> list[str]:
    """Our revisions, oldest first."""
    script = ScriptDirectory.from_config(migrate._config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def our_tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        names = inspect(engine).get_table_names()
        return {t for t in names if t.startswith("as_") and t != migrate.VERSION_TABLE}
    finally:
        engine.dispose()


def test_upgrade_from_empty_and_step_by_step(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        assert migrate.current_revision(engine) is None
        history = revisions()
        assert history[-1] == migrate.head_revision()
        for revision in history:  # every revision upgrades from the one before it
            migrate.upgrade(engine, revision)
            assert migrate.current_revision(engine) == revision
        migrate.check_schema(engine)
        assert {
            "as_users",
            "as_tokens",
            "as_studies",
            "as_workers",
            "as_runs",
            "as_epochs",
            "as_meta",
        } <= our_tables(empty_db_url)
        migrate.downgrade(engine)  # one step
        previous = history[-2] if len(history) > 1 else None
        assert migrate.current_revision(engine) == previous
        with pytest.raises(migrate.SchemaOutOfDate, match="actsearch db upgrade"):
            migrate.check_schema(engine)
        migrate.upgrade(engine)  # and back up from the previous revision
        assert migrate.current_revision(engine) == migrate.head_revision()
        migrate.downgrade(engine, "base")
        assert our_tables(empty_db_url) == set()
    finally:
        engine.dispose()


def test_optuna_tables_and_data_survive_our_migrations(empty_db_url: str) -> None:
    storage = optuna.storages.RDBStorage(empty_db_url)
    study = optuna.create_study(storage=storage, study_name="theirs", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    before = [(t.number, t.params, t.value) for t in study.trials]
    optuna_tables = set(inspect(storage.engine).get_table_names())
    storage.engine.dispose()

    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine)
        migrate.downgrade(engine)
        migrate.upgrade(engine)
        migrate.downgrade(engine, "base")
        remaining = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert optuna_tables <= remaining
    assert "alembic_version" in remaining  # Optuna's own version table, untouched
    again = optuna.load_study(study_name="theirs", storage=optuna.storages.RDBStorage(empty_db_url))
    assert [(t.number, t.params, t.value) for t in again.trials] == before


def test_models_match_the_migrations(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine)
        sqlite = engine.dialect.name == "sqlite"
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    # SQLite has one INTEGER type; 0003 widens the column on PostgreSQL only.
                    "compare_type": not sqlite,
                    "include_name": lambda name, kind, _parent: (
                        kind != "table" or name in Base.metadata.tables
                    ),
                },
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
