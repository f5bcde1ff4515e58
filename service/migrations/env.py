"""Alembic environment for our tables only; Optuna migrates its own with its own version table."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.db.models import Base
from service.migrate import VERSION_TABLE


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    # Autogenerate must never propose dropping Optuna's tables that share the database.
    return type_ != "table" or bool(name and name.startswith("as_"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=_ours,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `actsearch db upgrade` (service.migrate)")
_run(connection)
