"""Workers as the API lists them: current trial, heartbeat age, and whether they went silent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service.db import LIVE_WORKER_STATUSES, Run, Worker
from service.store.base import Database


def list_workers(db: Database, grace_s: float) -> list[dict[str, Any]]:
    """Workers with their current trial, heartbeat age and whether they went silent."""
    with db.reading() as session:
        now = db.now(session)  # the clock heartbeats are written with (Database.clock)
        rows = session.execute(
            select(Worker, Run.study_id, Run.trial_number)
            .outerjoin(Run, Run.id == Worker.current_run_id)
            .order_by(Worker.heartbeat_at.desc(), Worker.id)
        ).all()
    out = []
    for worker, study_id, number in rows:
        age = max((now - worker.heartbeat_at).total_seconds(), 0.0)
        out.append(
            {
                "id": worker.id,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "device": worker.device,
                "slot": worker.slot,
                "status": worker.status,
                "version": worker.version,
                "started_at": worker.started_at,
                "heartbeat_at": worker.heartbeat_at,
                "heartbeat_age_s": age,
                "stale": worker.status in LIVE_WORKER_STATUSES and age > grace_s,
                "current_run_id": worker.current_run_id,
                "current_study_id": study_id,
                "current_trial_number": number,
                "current_epoch": worker.current_epoch,
                "img_per_s": worker.img_per_s,
                "trials_done": worker.trials_done,
                "progress": worker.progress if worker.current_run_id is not None else None,
            }
        )
    return out
