"""Worker processes: what each is training and whether it still heartbeats."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.deps import CurrentUser, StoreDep
from service.api.schemas import WorkerPublic, error_responses
from service.store.queries import list_workers

router = APIRouter(tags=["workers"])


@router.get("/workers", response_model=list[WorkerPublic], responses=error_responses(401))
def get_workers(request: Request, store: StoreDep, _user: CurrentUser) -> list[WorkerPublic]:
    """Workers with current trial, epoch, img/s, heartbeat age and whether they went stale."""
    grace_s = request.app.state.settings.grace_s
    return [WorkerPublic.model_validate(w) for w in list_workers(store.db, grace_s)]
