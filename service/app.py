"""The FastAPI application factory: REST API under /api/v1 plus the dashboard."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from service.api import errors
from service.api.routes import ROUTERS
from service.dashboard import routes as dashboard
from service.sessions import SessionSigner, shared_secret
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """Build the app on `store` (or on the settings' database, whose schema must be current)."""
    store = store or Store.open(settings.resolved_database_url, max_attempts=settings.max_attempts)
    app = FastAPI(
        title="actsearch",
        version="1",
        summary="Search activation functions: submit studies, follow trials, compare families.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.settings = settings
    app.state.sessions = SessionSigner(shared_secret(store.db, settings.session_secret))
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router, prefix="/api/v1")
    dashboard.install(app)
    return app
