"""All API routers, included by create_app under /api/v1."""

from fastapi import APIRouter

from service.api.routes import (
    campaigns,
    exports,
    health,
    pareto,
    studies,
    trials,
    users,
    workers,
)

ROUTERS: list[APIRouter] = [
    health.router,
    studies.router,
    campaigns.router,
    trials.router,
    exports.router,
    pareto.router,
    workers.router,
    users.router,
]
