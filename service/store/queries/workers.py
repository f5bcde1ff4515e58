"""Workers as the API lists them: current trial, heartbeat age, and whether they went silent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select

from service.db import LIVE_WORKER_STATUSES, Run, Worker, utcnow
from service.store.base import Database

WORKER_COLUMNS = (
    Worker.id, Worker.hostname, Worker.pid, Worker.device, Worker.slot, Worker.status,
    Worker.version, Worker.started_at, Worker.heartbeat_at, Worker.current_run_id,
    Worker.current_epoch, Worker.img_per_s, Worker.trials_done, Worker.progress,
)  # fmt: skip


def _listing(with_clock: bool) -> Select[Any]:
    """Every worker with its current trial's study and number; on PostgreSQL also the database's
    clock (heartbeats are written with it: Database.clock), in the same round trip."""
    columns: list[Any] = [*WORKER_COLUMNS, Run.study_id, Run.trial_number]
    if with_clock:
        columns.append(func.now().label("now"))
    return (
        select(*columns)
        .outerjoin(Run, Run.id == Worker.current_run_id)
        .order_by(Worker.heartbeat_at.desc(), Worker.id)
    )


LISTING = {clock: _listing(clock) for clock in (False, True)}  # built once: polled often


def list_workers(db: Database, grace_s: float) -> list[dict[str, Any]]:
    """Workers with their current trial, heartbeat age and whether they went silent.

    One Core statement (no ORM objects): the dashboard's workers page and `actsearch workers`
    poll it."""
    with db.read_connection() as connection:
        rows = connection.execute(LISTING[not db.sqlite]).mappings().all()
    now = utcnow() if db.sqlite else None
    return [_worker(row, now or row["now"], grace_s) for row in rows]


def _worker(row: Any, now: datetime, grace_s: float) -> dict[str, Any]:
    age = max((now - row["heartbeat_at"]).total_seconds(), 0.0)
    listed = {column.key: row[column.key] for column in WORKER_COLUMNS}
    return listed | {
        "heartbeat_age_s": age,
        "stale": row["status"] in LIVE_WORKER_STATUSES and age > grace_s,
        "current_study_id": row["study_id"],
        "current_trial_number": row["trial_number"],
        "progress": row["progress"] if row["current_run_id"] is not None else None,
    }
