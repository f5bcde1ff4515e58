"""Worker processes: registration, heartbeats (theirs and their current run's), clean stops."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from service.db import Run, RunState, Worker, WorkerStatus, utcnow
from service.store.base import Database
from service.store.run_statements import study_status
from service.store.runs import RunStatus


class Workers:
    """The rows of as_workers, written by the worker processes themselves."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def register(
        self,
        worker_id: str,
        *,
        hostname: str,
        pid: int,
        device: str,
        slot: int = 0,
        version: str = "",
    ) -> None:
        """Add (or re-register) a worker process."""
        with self.db.session() as session:
            row = session.get(Worker, worker_id) or Worker(id=worker_id)
            row.hostname, row.pid, row.device, row.slot, row.version = (
                hostname,
                pid,
                device,
                slot,
                version,
            )
            row.status = WorkerStatus.IDLE
            row.started_at = utcnow()
            row.heartbeat_at = self.db.clock()
            row.trials_done = row.trials_done or 0
            session.add(row)

    def heartbeat(
        self, worker_id: str, run_id: int | None = None, progress: dict[str, Any] | None = None
    ) -> RunStatus | None:
        """The worker (and its current run) is alive, with the run's live progress.

        Returns whether the run should go on (its study cancelled or paused, or the run reaped
        meanwhile: RunStatus.stop_reason), read in the same statement; None when idle.
        """
        now = self.db.clock()
        status = None
        rate = progress.get("img_per_s") if progress else None
        with self.db.session() as session:
            # Run row first, then the worker row: the order every other writer (report_epoch,
            # finish, reap) locks them in, so a heartbeat never deadlocks with its own worker.
            if run_id is not None:
                row = session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.state == RunState.RUNNING)
                    .values(heartbeat_at=now, progress=progress)
                    .returning(Run.state, study_status(Run.study_id))
                ).one_or_none()
                if row is None:  # reaped or ended meanwhile (rare): say how
                    row = session.execute(
                        select(Run.state, study_status(Run.study_id)).where(Run.id == run_id)
                    ).one_or_none()
                status = (
                    RunStatus(row[0], row[1] or "deleted") if row else RunStatus("gone", "deleted")
                )
            session.execute(
                update(Worker)
                .where(Worker.id == worker_id)
                .values(
                    heartbeat_at=now,
                    current_run_id=run_id,
                    status=WorkerStatus.BUSY if run_id else WorkerStatus.IDLE,
                    # A worker's rate is its current trial's: none while idle or starting.
                    img_per_s=rate,
                    current_epoch=progress.get("epoch") if progress and run_id else None,
                    progress=progress if run_id else None,
                )
            )
        return status

    def stopped(self, worker_id: str) -> None:
        """A worker exited cleanly."""
        with self.db.session() as session:
            session.execute(
                update(Worker)
                .where(Worker.id == worker_id)
                .values(status=WorkerStatus.STOPPED, current_run_id=None, current_epoch=None)
            )
