"""Liveness and readiness probes: the only routes that need no token."""

from __future__ import annotations

import importlib.metadata
import logging

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service import migrate
from service.api.deps import StoreDep
from service.api.schemas import HealthOut, ReadyOut, error_responses

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("actsearch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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
        current = migrate.current_revision(store.db.engine)
    except SQLAlchemyError as error:
        log.warning("readiness: database does not answer: %s", error)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the database does not answer; check ACTSEARCH_DATABASE_URL and the database server",
        ) from error
    head = migrate.head_revision()
    if current != head:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"database schema is at {current or 'none'}, this code needs {head}; "
            "run `actsearch db upgrade`",
        )
    return ReadyOut(database=store.db.engine.dialect.name, schema_revision=head)
