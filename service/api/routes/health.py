"""Liveness and readiness probes: the only routes that need no token."""

from __future__ import annotations

import importlib.metadata
import logging

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from service import migrate
from service.api.deps import StoreDep
from service.api.errors import RETRY_AFTER_S, outage_detail
from service.api.schemas import HealthOut, ReadyOut, error_responses
from service.db import Base, describe_db_error, is_db_outage

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("actsearch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _not_ready(detail: str, *, retry: bool = False) -> HTTPException:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else None
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers=headers)


def _missing_tables(connection: Connection) -> list[str]:
    """Our tables the database lacks (dropped by hand, or a schema restored in part)."""
    present = set(inspect(connection).get_table_names())
    return sorted(set(Base.metadata.tables) - present)


@router.get("/health", response_model=HealthOut)
def health() -> HealthOut:
    """The API process is up (no database access, no token)."""
    return HealthOut(version=_version())


@router.get("/ready", response_model=ReadyOut, responses=error_responses(503))
def ready(store: StoreDep) -> ReadyOut:
    """The database answers and its schema is current; 503 saying what is wrong otherwise."""
    try:
        with store.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            missing = _missing_tables(connection)
        current = migrate.current_revision(store.db.engine)
    except SQLAlchemyError as error:
        if is_db_outage(error):
            log.warning("readiness: database unreachable: %s", describe_db_error(error))
            raise _not_ready(outage_detail(), retry=True) from error
        log.warning("readiness: database unusable: %s", describe_db_error(error))
        raise _not_ready(
            f"the database answers but cannot be used ({describe_db_error(error)}); check "
            "ACTSEARCH_DATABASE_URL and the database"
        ) from error
    head = migrate.head_revision()
    if current != head:
        raise _not_ready(
            f"database schema is at {current or 'none'}, this code needs {head}; "
            "run `actsearch db upgrade`"
        )
    if missing:
        raise _not_ready(
            f"the database lacks the table(s) {', '.join(missing)} although its schema is "
            f"at {head}: it was changed by hand or restored in part; restore it from a backup "
            "(or migrate an empty database with `actsearch db upgrade`)"
        )
    return ReadyOut(database=store.db.engine.dialect.name, schema_revision=head)
