"""Trial runs: claiming within budget, live epoch reports, finishing, heartbeats, lost workers.

Exact budgets: a claim locks its study's row (`FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on
SQLite) and counts the study's budget-using runs before adding one, so racing workers can never
give a study more than `n_trials` runs. A run lost with its worker hands its budget unit to a
queued retry with the same parameters, so a retry never counts twice.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import optuna
from optuna.trial import TrialState
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from service.db import Epoch, Run, Study, Worker, utcnow
from service.store.base import Database, NotFound
from service.store.studies import FINAL, RUNNABLE

log = logging.getLogger(__name__)

FINISHED_RUN_STATES = ("complete", "pruned", "failed", "cancelled")


@dataclass(frozen=True)
class Claim:
    """A run a worker now owns: train `study_id`'s next trial (or retry `params`)."""

    run_id: int
    study_id: int
    optuna_name: str
    spec: dict[str, Any]
    attempt: int
    params: dict[str, Any] | None  # set for a retry: the lost attempt's parameters
    retry_of: int | None


@dataclass(frozen=True)
class RunStatus:
    """What a running trial must know each epoch: keep going, or stop and why."""

    state: str  # the run's state; anything but "running" means stop
    study_status: str  # cancelled / paused / failed / ... of its study

    @property
    def stop_reason(self) -> str | None:
        """Why the run must stop now, or None to continue."""
        if self.state != "running":
            return "worker_lost" if self.state == "failed" else self.state
        if self.study_status in ("cancelled", "failed", "deleted"):
            return "cancelled"
        return None


class Runs:
    """Claim, report, finish and reap runs."""

    def __init__(self, db: Database, *, max_attempts: int = 3) -> None:
        self.db = db
        self.max_attempts = max_attempts

    # -- claiming -------------------------------------------------------------------------
    def claim_next(self, worker_id: str, study_ids: list[int] | None = None) -> Claim | None:
        """Claim the next run of the highest-priority runnable study, round-robin among equals."""
        for study_id in self._candidates(study_ids):
            claim = self._claim_in(study_id, worker_id)
            if claim is not None:
                return claim
        return None

    def _candidates(self, study_ids: list[int] | None) -> list[int]:
        query = select(Study.id).where(Study.status.in_(RUNNABLE))
        if study_ids:
            query = query.where(Study.id.in_(study_ids))
        # Least recently claimed first among equal priorities: round-robin across studies.
        query = query.order_by(
            Study.priority.desc(), Study.last_claim_at.asc().nulls_first(), Study.id
        )
        with self.db.session() as session:
            return list(session.scalars(query))

    def _claim_in(self, study_id: int, worker_id: str) -> Claim | None:
        with self.db.session(immediate=True) as session:
            study = session.get(Study, study_id, with_for_update=not self.db.sqlite)
            if study is None or study.status not in RUNNABLE:
                return None
            now = utcnow()
            run = self._take_retry(session, study_id) or self._new_run(session, study)
            if run is None:
                self._complete_if_done(session, study)
                return None
            run.state = "running"
            run.worker_id = worker_id
            run.started_at = run.heartbeat_at = now
            study.last_claim_at = now
            if study.status == "queued":
                study.status = "running"
                study.started_at = now
            study.updated_at = now
            session.flush()
            return Claim(
                run_id=run.id,
                study_id=study_id,
                optuna_name=study.optuna_name,
                spec=study.spec,
                attempt=run.attempt,
                params=run.params if run.retry_of is not None else None,
                retry_of=run.retry_of,
            )

    @staticmethod
    def _take_retry(session: Session, study_id: int) -> Run | None:
        return session.scalars(
            select(Run)
            .where(Run.study_id == study_id, Run.state == "queued")
            .order_by(Run.id)
            .limit(1)
        ).first()

    @staticmethod
    def _new_run(session: Session, study: Study) -> Run | None:
        used = session.scalar(
            select(func.count())
            .select_from(Run)
            .where(Run.study_id == study.id, Run.counts_budget.is_(True))
        )
        if (used or 0) >= study.n_trials:
            return None
        run = Run(
            study_id=study.id,
            attempt=1,
            state="running",
            counts_budget=True,
            created_at=utcnow(),
            epochs_done=0,
        )
        session.add(run)
        return run

    @staticmethod
    def _complete_if_done(session: Session, study: Study) -> None:
        """A study whose budget is used and whose runs have all ended is completed."""
        open_runs = session.scalar(
            select(func.count())
            .select_from(Run)
            .where(Run.study_id == study.id, Run.state.in_(("queued", "running")))
        )
        used = session.scalar(
            select(func.count())
            .select_from(Run)
            .where(Run.study_id == study.id, Run.counts_budget.is_(True))
        )
        if not open_runs and (used or 0) >= study.n_trials and study.status not in FINAL:
            study.status = "completed"
            study.finished_at = study.updated_at = utcnow()

    def release(self, run_id: int) -> None:
        """Undo a claim that never reached Optuna (e.g. its data is missing): no trace is left.

        A fresh run is deleted, giving its budget unit back; a retry goes back to the queue, since
        the budget unit it carries was handed over by a lost attempt that no longer counts.
        """
        with self.db.session(immediate=True) as session:
            run = self._get(session, run_id)
            if run.optuna_trial_id is not None:
                raise ValueError(
                    f"run {run_id} already has Optuna trial {run.optuna_trial_id}; finish it instead"
                )
            worker_id = run.worker_id
            if run.retry_of is not None:
                run.state, run.worker_id = "queued", None
                run.started_at = run.heartbeat_at = None
            else:
                session.delete(run)
            if worker_id:
                session.execute(
                    update(Worker).where(Worker.id == worker_id).values(current_run_id=None)
                )

    # -- running ----------------------------------------------------------------------------
    def attach_trial(
        self,
        run_id: int,
        *,
        trial_id: int,
        number: int,
        params: dict[str, Any],
        family: str | None,
        config: dict[str, Any] | None,
    ) -> None:
        """Record which Optuna trial a run is and what it trains."""
        with self.db.session() as session:
            run = self._get(session, run_id)
            run.optuna_trial_id = trial_id
            run.trial_number = number
            run.params = params
            run.family = family
            run.config = config

    def report_epoch(
        self,
        run_id: int,
        epoch: int,
        *,
        train_loss: float | None,
        val_acc: float | None,
        img_per_s: float | None,
        elapsed_s: float | None,
        worker_id: str | None = None,
    ) -> RunStatus:
        """Store one epoch's values at once (idempotent: a repeat after a reconnect overwrites)."""
        with self.db.session() as session:
            run = self._get(session, run_id)
            row = session.get(Epoch, (run_id, epoch))
            if row is None:
                row = Epoch(run_id=run_id, epoch=epoch, created_at=utcnow())
                session.add(row)
            row.train_loss, row.val_acc = train_loss, val_acc
            row.img_per_s, row.elapsed_s = img_per_s, elapsed_s
            run.epochs_done = max(run.epochs_done, epoch + 1)
            if run.state == "running":
                run.heartbeat_at = utcnow()
            if worker_id:
                session.execute(
                    update(Worker)
                    .where(Worker.id == worker_id)
                    .values(current_epoch=epoch, img_per_s=img_per_s, heartbeat_at=utcnow())
                )
            return self._status(session, run)

    def status(self, run_id: int) -> RunStatus:
        """Whether a run should go on (its study may have been cancelled, or it was reaped)."""
        with self.db.session() as session:
            return self._status(session, self._get(session, run_id))

    @staticmethod
    def _status(session: Session, run: Run) -> RunStatus:
        study = session.get(Study, run.study_id)
        return RunStatus(state=run.state, study_status=study.status if study else "deleted")

    def finish(
        self,
        run_id: int,
        *,
        state: str,
        value: float | None = None,
        value_std: float | None = None,
        test_acc: float | None = None,
        record: dict[str, Any] | None = None,
        failure_reason: str | None = None,
        failure_message: str | None = None,
        failure_epoch: int | None = None,
        log_tail: str | None = None,
    ) -> bool:
        """Store a run's outcome; False when the run had been reaped meanwhile (result dropped)."""
        if state not in FINISHED_RUN_STATES:
            raise ValueError(f"finish state must be one of {FINISHED_RUN_STATES}, not {state!r}")
        with self.db.session(immediate=True) as session:
            run = self._get(session, run_id)
            stored = (run.state, run.value, run.failure_reason, run.record)
            if run.finished_at is not None and stored == (state, value, failure_reason, record):
                return True  # a retry after a lost acknowledgement: already stored
            if run.state != "running":
                log.warning(
                    "run %s was %s before it finished; its result is dropped", run_id, run.state
                )
                return False
            now = utcnow()
            run.state = state
            run.value, run.value_std, run.test_acc = value, value_std, test_acc
            run.failure_reason, run.failure_message = failure_reason, failure_message
            run.failure_epoch = failure_epoch
            run.record = record
            run.log_tail = log_tail
            run.finished_at = now
            run.duration_s = (now - _aware(run.started_at or now)).total_seconds()
            if record:
                run.img_per_s = record.get("img_per_s")
                run.peak_mem_bytes = record.get("peak_memory_bytes")
            if run.worker_id:
                session.execute(
                    update(Worker)
                    .where(Worker.id == run.worker_id)
                    .values(
                        trials_done=Worker.trials_done + 1, current_run_id=None, current_epoch=None
                    )
                )
            study = session.get(Study, run.study_id)
            if study is not None:
                session.flush()
                self._complete_if_done(session, study)
            return True

    @staticmethod
    def _get(session: Session, run_id: int) -> Run:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFound(f"run {run_id} does not exist")
        return run

    # -- lost workers -----------------------------------------------------------------------
    def reap_lost(self, grace_s: float) -> list[int]:
        """Fail runs whose worker has been silent for `grace_s` seconds; queue their retries."""
        cutoff = utcnow() - timedelta(seconds=grace_s)
        with self.db.session() as session:
            stale = list(
                session.scalars(
                    select(Run.id).where(Run.state == "running", Run.heartbeat_at < cutoff)
                )
            )
        return [run_id for run_id in stale if self._reap(run_id, cutoff)]

    def _reap(self, run_id: int, cutoff: datetime) -> bool:
        with self.db.session(immediate=True) as session:
            # The conditional UPDATE makes concurrent reapers agree on one winner.
            won = cast(
                CursorResult[Any],
                session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.state == "running", Run.heartbeat_at < cutoff)
                    .values(
                        state="failed",
                        failure_reason="worker_lost",
                        finished_at=utcnow(),
                        failure_message="worker stopped heartbeating",
                    )
                ),
            ).rowcount
            if not won:
                return False
            run = self._get(session, run_id)
            study = session.get(Study, run.study_id)
            retry = (
                run.attempt < self.max_attempts
                and study is not None
                and study.status in ("queued", "running", "paused")
            )
            if retry:
                run.counts_budget = False  # its budget unit moves to the retry
                session.add(
                    Run(
                        study_id=run.study_id,
                        attempt=run.attempt + 1,
                        retry_of=run.id,
                        state="queued",
                        counts_budget=True,
                        params=run.params,
                        family=run.family,
                        config=run.config,
                        created_at=utcnow(),
                        epochs_done=0,
                    )
                )
            if run.worker_id:
                session.execute(
                    update(Worker)
                    .where(Worker.id == run.worker_id)
                    .values(status="lost", current_run_id=None)
                )
            trial_id = run.optuna_trial_id
            if study is not None and not retry:
                session.flush()
                self._complete_if_done(session, study)
        log.warning("run %s lost its worker; %s", run_id, "retry queued" if retry else "no retry")
        self._fail_optuna_trial(trial_id)
        return True

    def _fail_optuna_trial(self, trial_id: int | None) -> None:
        if trial_id is None:
            return
        # Already finished means there is nothing left to fail.
        with contextlib.suppress(RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            self.db.optuna.set_trial_state_values(trial_id, TrialState.FAIL)

    # -- workers ----------------------------------------------------------------------------
    def register_worker(
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
            row.status = "idle"
            row.started_at = row.heartbeat_at = utcnow()
            row.trials_done = row.trials_done or 0
            session.add(row)

    def heartbeat(self, worker_id: str, run_id: int | None = None) -> None:
        """The worker (and its current run) is alive."""
        now = utcnow()
        with self.db.session() as session:
            # Run row first, then the worker row: the order every other writer (report_epoch,
            # finish, reap) locks them in, so a heartbeat never deadlocks with its own worker.
            if run_id is not None:
                session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.state == "running")
                    .values(heartbeat_at=now)
                )
            session.execute(
                update(Worker)
                .where(Worker.id == worker_id)
                .values(
                    heartbeat_at=now, current_run_id=run_id, status="busy" if run_id else "idle"
                )
            )

    def worker_stopped(self, worker_id: str) -> None:
        """A worker exited cleanly."""
        with self.db.session() as session:
            session.execute(
                update(Worker)
                .where(Worker.id == worker_id)
                .values(status="stopped", current_run_id=None, current_epoch=None)
            )

    def hand_back(self, run_id: int, reason: str = "worker stopped") -> None:
        """Give an unfinished run back (SIGTERM): it is retried at once, same parameters."""
        with self.db.session() as session:
            run = self._get(session, run_id)
            if run.state != "running":
                return
            run.heartbeat_at = datetime(1970, 1, 1, tzinfo=utcnow().tzinfo)
        self._reap(run_id, utcnow())
        with self.db.session() as session:
            self._get(session, run_id).failure_message = reason


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes even for timezone-aware columns: they are UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)
