"""Worker processes: what each is training and whether it still heartbeats."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter

from service.api.deps import CurrentUser, StoreDep
from service.api.schemas import WorkerPublic, error_responses
from service.store.queries import list_workers

router = APIRouter(tags=["workers"])
WORKERS = TypeAdapter(list[WorkerPublic])


@router.get("/workers", response_model=list[WorkerPublic], responses=error_responses(401))
def get_workers(request: Request, store: StoreDep, _user: CurrentUser) -> Response:
    """Workers with current trial, epoch, img/s, heartbeat age and whether they went stale."""
    grace_s = request.app.state.settings.grace_s
    # Validated and written as JSON in one pass (pydantic-core): dashboards poll this route and
    # its ages change every second, so no answer is kept; FastAPI would validate it twice.
    workers = WORKERS.validate_python(list_workers(store.db, grace_s))
    return Response(WORKERS.dump_json(workers), media_type="application/json")
