"""The FastAPI application factory: REST API under /api/v1 plus the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api import errors, polls
from service.api.routes import ROUTERS
from service.api.security import SecurityHeadersMiddleware
from service.dashboard import routes as dashboard
from service.db import describe_db_error, is_db_outage
from service.lifetime import die_with_parent, parent_is
from service.sessions import SessionSigner, shared_secret
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)

DEFAULT_REAP_INTERVAL_S = 5.0
# Requests served at once by one process (sync routes and dependencies run in anyio's thread
# pool), and the database connections kept for them: a pool smaller than the threads would open
# and close a connection (a PostgreSQL backend's start-up) for many requests under load.
REQUEST_THREADS = 12
POOL: dict[str, Any] = {
    "pool_size": REQUEST_THREADS,
    "max_overflow": 4,
}  # 4: the background loop, bursts


async def reap_forever(store: Store, grace_s: float, interval_s: float) -> None:
    """Fail runs whose worker went silent and move campaigns on, every `interval_s`, even when
    no worker is alive."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            reaped = await asyncio.to_thread(store.runs.reap_lost, grace_s)
            # Campaigns whose stage ended move on here too, even when no worker is alive.
            await asyncio.to_thread(store.campaigns.advance)
        except Exception as error:
            # A database hiccup must not end the loop; the next round tries again.
            if is_db_outage(error):
                log.warning(
                    "reaping lost runs: database unreachable (%s); retrying in %.0f s",
                    describe_db_error(error),
                    interval_s,
                )
            else:
                log.exception("reaping lost runs failed; retrying in %.0f s", interval_s)
            continue
        if reaped:
            log.info("reaped runs %s whose workers went silent", reaped)


def _lifespan(
    store: Store, settings: Settings, owns_store: bool, reap_interval_s: float | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
        task = None
        if reap_interval_s:
            task = asyncio.create_task(reap_forever(store, settings.grace_s, reap_interval_s))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if owns_store:
                store.dispose()

    return lifespan


OUTAGE_RESPONSE: dict[str, Any] = {
    "description": "the database is unreachable for now; retry after `Retry-After` seconds",
    "headers": {
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "schema": {"type": "integer"},
        }
    },
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
}


def _document_outages(schema: dict[str, Any]) -> None:
    """Every operation that reads the database (all that need a token) may answer 503."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "401" in responses:
                responses.setdefault("503", OUTAGE_RESPONSE)


def _openapi_with_spec(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus the study spec's JSON schema (the body of POST /studies)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    from search_space.spec import StudySpec

    spec_schema = StudySpec.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in spec_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["StudySpec"] = spec_schema
    _document_outages(schema)
    app.openapi_schema = schema
    return schema


def create_app(
    settings: Settings,
    store: Store | None = None,
    *,
    reap_interval_s: float | None = DEFAULT_REAP_INTERVAL_S,
) -> FastAPI:
    """Build the app on `store` (or on the settings' database, whose schema must be current).

    `reap_interval_s=None` turns off the background reaping of runs whose worker went silent.
    """
    owns_store = store is None
    store = store or Store.open(
        settings.resolved_database_url, max_attempts=settings.max_attempts, **POOL
    )
    app = FastAPI(
        title="actsearch",
        version="1",
        summary="Search activation functions: submit studies, follow trials, compare families.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # the dashboard serves it, with a vendored Swagger UI (no CDN, no inline JS)
        redoc_url=None,
        lifespan=_lifespan(store, settings, owns_store, reap_interval_s),
    )
    app.state.store = store
    app.state.settings = settings
    app.state.sessions = SessionSigner(shared_secret(store.db, settings.session_secret))
    polls.install(app)  # first: its middleware is the innermost, next to the routes
    errors.install(app)
    # Outermost: every answer, the 500s and 503s of the error middleware too, gets the headers.
    app.add_middleware(SecurityHeadersMiddleware)
    for router in ROUTERS:
        polls.include_router(app, router, prefix="/api/v1")
    dashboard.install(app)
    app.openapi = lambda: _openapi_with_spec(app)  # type: ignore[method-assign]
    return app


SERVER_PARENT_ENV = "ACTSEARCH_SERVER_PARENT_PID"  # set by `serve`/`up` for their server processes


def app_from_env() -> FastAPI:
    """The app configured from ACTSEARCH_* variables (`uvicorn --factory service.app:app_from_env`).

    In a server process `serve`/`up` started, SIGTERM comes when that parent dies (even by
    kill -9): the process finishes its requests and ends instead of serving on alone.
    """
    parent = int(os.environ.get(SERVER_PARENT_ENV) or 0)
    if parent:
        die_with_parent(parent, signal.SIGTERM)
        if not parent_is(parent):
            raise SystemExit(f"the server's parent process {parent} is gone")
    return create_app(Settings())
