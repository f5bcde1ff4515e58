"""All API routers, included by create_app under /api/v1."""

from fastapi import APIRouter

from service.api.routes import campaigns, exports, health, studies, trials, users, workers

ROUTERS: list[APIRouter] = [
    health.router,
    studies.router,
    campaigns.router,
    trials.router,
    exports.router,
    workers.router,
    users.router,
]
