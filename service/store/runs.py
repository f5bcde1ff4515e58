"""Trial runs: claiming within budget, live epoch reports, finishing, heartbeats, lost workers.

Exact budgets: a claim locks its study's row (`FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on
SQLite) and counts the study's budget-using runs before adding one, so racing workers can never
give a study more than `n_trials` runs. A run lost with its worker hands its budget unit to a
queued retry with the same parameters, so a retry never counts twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import optuna
from optuna.trial import TrialState
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from service.db import (
    ACTIVE_STUDY_STATUSES,
    FINISHED_RUN_STATES,
    Run,
    RunState,
    Study,
    StudyStatus,
    Worker,
    WorkerStatus,
    utcnow,
)
from service.store.base import Database, NotFound
from service.store.completion import complete, complete_if_done, stop_for_time, time_limit_reached
from service.store.run_statements import (
    ATTACH_UPDATE,
    BUDGET,
    CANDIDATES,
    CANDIDATES_AMONG,
    CLAIM_STUDY,
    EPOCH_RUN_UPDATE,
    EPOCH_UPSERT,
    EPOCH_WORKER_UPDATE,
    FINISH_WORKER_UPDATE,
    study_status,
)
from service.store.trainings import release_unfinished

log = logging.getLogger(__name__)

# Writes a caller adds to one of ours, in the same transaction (the worker's held Optuna
# writes, search_space.optuna_access.HeldWrites: one commit where there were two).
AlsoWrite = Callable[[Session], None]


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
    def running(self) -> bool:
        """Whether the run is still this worker's to train."""
        return self.state == RunState.RUNNING

    @property
    def stop_reason(self) -> str | None:
        """Why the run must stop now, or None to continue."""
        if self.state != RunState.RUNNING:
            return "worker_lost" if self.state == RunState.FAILED else self.state
        if self.study_status in (StudyStatus.CANCELLED, StudyStatus.FAILED, "deleted"):
            return "cancelled"
        if self.study_status == StudyStatus.PAUSED:
            return "paused"  # handed back within a few steps; retried when resumed
        return None


@dataclass(frozen=True)
class Cost:
    """A multi-objective run's measured cost: Optuna's second value (spec `objectives`)."""

    kind: str  # params | step_time
    value: float  # a parameter count, or a step time relative to ReLU's
    device: str  # where it was measured: a step-time ratio holds there only


class Runs:
    """Claim, report, finish and reap runs."""

    def __init__(self, db: Database, *, max_attempts: int = 3) -> None:
        self.db = db
        self.max_attempts = max_attempts

    # -- claiming -------------------------------------------------------------------------
    def claim_next(
        self,
        worker_id: str,
        study_ids: list[int] | None = None,
        exclude: Collection[int] = (),
        synced: Collection[int] = (),
    ) -> Claim | None:
        """Claim the next run of the highest-priority runnable study, round-robin among equals.

        `study_ids` limits the choice; `exclude` names studies this worker cannot run now;
        `synced` names runs whose Optuna trials this worker has told since its last claim (see
        mark_synced), recorded in the claim's transaction instead of one of their own.
        """
        # One transaction for the whole claim: fewer round trips on the hot path of every worker.
        with self.db.session(immediate=True) as session:
            if synced:
                self._mark_synced(session, synced)
            for study_id in self._candidates(session, study_ids):
                if study_id in exclude:
                    continue
                claim = self._claim_in(session, study_id, worker_id)
                if claim is not None:
                    return claim
        return None

    @staticmethod
    def _candidates(session: Session, study_ids: list[int] | None) -> list[int]:
        if study_ids:
            return list(session.scalars(CANDIDATES_AMONG, {"b_studies": study_ids}))
        return list(session.scalars(CANDIDATES))

    def _claim_in(self, session: Session, study_id: int, worker_id: str) -> Claim | None:
        now = utcnow()
        # UPDATE … RETURNING both locks the study row (until commit: racing claims queue here;
        # SQLite: the whole claim runs under BEGIN IMMEDIATE) and reads what the claim needs, so
        # the lock is held for three statements: this one, the budget count and the insert.
        study = session.execute(CLAIM_STUDY, {"b_study": study_id, "b_now": now}).one_or_none()
        if study is None:
            return None
        n_trials, optuna_name, spec, started_at = study
        if time_limit_reached(spec, started_at, now) is not None:
            stop_for_time(session, study_id)
            return None
        used, open_runs, retry_id = self._budget(session, study_id)
        if retry_id is not None:
            run = session.get(Run, retry_id)
            assert run is not None
        elif used < n_trials:
            run = Run(study_id=study_id, attempt=1, counts_budget=True, created_at=now)
            session.add(run)
        else:
            if not open_runs:
                complete(session, study_id)
            return None
        run.state = RunState.RUNNING
        run.worker_id = worker_id
        run.started_at = now
        run.heartbeat_at = self.db.clock()
        run.epochs_done = 0
        session.flush()
        return Claim(
            run_id=run.id,
            study_id=study_id,
            optuna_name=optuna_name,
            spec=spec,
            attempt=run.attempt,
            params=run.params if run.retry_of is not None else None,
            retry_of=run.retry_of,
        )

    @staticmethod
    def _budget(session: Session, study_id: int) -> tuple[int, int, int | None]:
        """(budget units used, runs queued or running, oldest queued retry) in one query."""
        used, open_runs, retry_id = session.execute(BUDGET, {"b_study": study_id}).one()
        return int(used or 0), int(open_runs or 0), retry_id

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
                run.state, run.worker_id = RunState.QUEUED, None
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
        also: AlsoWrite | None = None,
    ) -> None:
        """Record which Optuna trial a run is and what it trains (`also`: in this transaction)."""
        with self.db.session() as session:
            done = session.execute(
                ATTACH_UPDATE,
                {
                    "b_run": run_id,
                    "b_trial": trial_id,
                    "b_number": number,
                    "b_params": params,
                    "b_family": family,
                    "b_config": config,
                },
            )
            if not cast(CursorResult[Any], done).rowcount:
                raise NotFound(f"run {run_id} does not exist")
            if also is not None:
                also(session)

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
        also: AlsoWrite | None = None,
    ) -> RunStatus:
        """Store one epoch's values at once (idempotent: a repeat after a reconnect overwrites).

        `also` is written in the same transaction while the run is still running (its reported
        value to Optuna); a run taken from its worker meanwhile gets only the epoch row."""
        now = utcnow()
        with self.db.session() as session:
            # Three statements in all, built once (module level): this runs every epoch of every
            # trial on every worker.
            sqlite_db = self.db.sqlite
            beat = {"b_beat": self.db.clock()} if sqlite_db else {}
            status = session.execute(
                EPOCH_RUN_UPDATE[sqlite_db], {"b_run": run_id, "b_done": epoch + 1, **beat}
            ).one_or_none()
            if status is None:
                raise NotFound(f"run {run_id} does not exist")
            values = {
                "train_loss": train_loss,
                "val_acc": val_acc,
                "img_per_s": img_per_s,
                "elapsed_s": elapsed_s,
            }
            session.execute(
                EPOCH_UPSERT[sqlite_db],
                {"run_id": run_id, "epoch": epoch, "created_at": now, **values},
            )
            if worker_id:
                session.execute(
                    EPOCH_WORKER_UPDATE[sqlite_db],
                    {"b_worker": worker_id, "b_epoch": epoch, "b_rate": img_per_s, **beat},
                )
            if also is not None and status[0] == RunState.RUNNING:
                also(session)
            return RunStatus(state=status[0], study_status=status[1] or "deleted")

    def status(self, run_id: int) -> RunStatus:
        """Whether a run should go on (its study may have been cancelled, or it was reaped)."""
        with self.db.session() as session:
            row = session.execute(
                select(Run.state, study_status(Run.study_id)).where(Run.id == run_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"run {run_id} does not exist")
            return RunStatus(state=row[0], study_status=row[1] or "deleted")

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
        config: dict[str, Any] | None = None,
        reused_from_run: int | None = None,
        cost: Cost | None = None,
        tell: AlsoWrite | None = None,
    ) -> bool:
        """Store a run's outcome; False when the run had been reaped meanwhile (result dropped).

        `cost`: a multi-objective study's second value, with what it measures and where.
        `tell`: the Optuna trial's end, written in this transaction; the run is then stored
        synced (else the worker tells Optuna afterwards and marks it, see reconcile).

        `config` replaces the stored trial config when the run trained another seed than the one
        it was attached with (a reseed); `reused_from_run` names the run whose recorded result
        this one took without training. Trainings of the run that did not complete are released.
        """
        if state not in FINISHED_RUN_STATES:
            raise ValueError(
                f"finish state must be one of {', '.join(FINISHED_RUN_STATES)}, not {state!r}"
            )
        with self.db.session(immediate=True) as session:
            run = self._get(session, run_id)
            stored = (run.state, run.value, run.failure_reason, run.record)
            if run.finished_at is not None and stored == (state, value, failure_reason, record):
                return True  # a retry after a lost acknowledgement: already stored
            if run.state != RunState.RUNNING:
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
            run.optuna_synced = tell is not None  # else: once the worker (or reconciler) tells
            run.reused_from_run = reused_from_run
            if cost is not None:
                run.cost, run.cost_kind, run.cost_device = cost.value, cost.kind, cost.device
            if config is not None:
                run.config = config
            run.duration_s = (now - (run.started_at or now)).total_seconds()
            if record:
                run.img_per_s = record.get("img_per_s")
                run.peak_mem_bytes = record.get("peak_memory_bytes")
            # The run's row first, in one UPDATE once every field is set, then its trainings and
            # its worker: the order every writer locks them in (see Workers.heartbeat), which
            # the Core statements below would not flush by themselves.
            session.flush()
            release_unfinished(session, [run_id])
            if tell is not None:
                tell(session)
            if run.worker_id:
                session.execute(FINISH_WORKER_UPDATE, {"b_worker": run.worker_id})
            complete_if_done(session, run.study_id)
            return True

    def record_of(self, run_id: int) -> dict[str, Any] | None:
        """A run's stored record (what a run that reuses its training copies)."""
        with self.db.session() as session:
            return session.scalar(select(Run.record).where(Run.id == run_id))

    @staticmethod
    def _get(session: Session, run_id: int) -> Run:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFound(f"run {run_id} does not exist")
        return run

    # -- lost workers -----------------------------------------------------------------------
    def reap_lost(self, grace_s: float) -> list[int]:
        """Fail runs whose worker has been silent for `grace_s` seconds; queue their retries."""
        cutoff = self.db.silent_since(grace_s)  # the database's clock: see Database.clock
        with self.db.session() as session:
            stale = list(
                session.scalars(
                    select(Run.id).where(Run.state == RunState.RUNNING, Run.heartbeat_at < cutoff)
                )
            )
        return [run_id for run_id in stale if self._reap(run_id, cutoff)]

    def _reap(self, run_id: int, cutoff: Any, *, handed_back: bool = False) -> bool:
        with self.db.session(immediate=True) as session:
            # The conditional UPDATE makes concurrent reapers agree on one winner.
            won = cast(
                CursorResult[Any],
                session.execute(
                    update(Run)
                    .where(
                        Run.id == run_id, Run.state == RunState.RUNNING, Run.heartbeat_at < cutoff
                    )
                    .values(
                        state=RunState.FAILED,
                        failure_reason="worker_lost",
                        finished_at=utcnow(),
                        failure_message="worker stopped heartbeating",
                        optuna_synced=False,
                    )
                ),
            ).rowcount
            if not won:
                return False
            release_unfinished(session, [run_id])  # its seed may be trained by the retry
            run = self._get(session, run_id)
            study = session.get(Study, run.study_id)
            # A run handed back (a signal, a pause) did not fail: its retry uses no attempt.
            retry = (
                (handed_back or run.attempt < self.max_attempts)
                and study is not None
                and study.status in ACTIVE_STUDY_STATUSES
            )
            if retry:
                run.counts_budget = False  # its budget unit moves to the retry
                session.add(
                    Run(
                        study_id=run.study_id,
                        attempt=run.attempt + 1,
                        retry_of=run.id,
                        state=RunState.QUEUED,
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
                    .values(status=WorkerStatus.LOST, current_run_id=None)
                )
            trial_id = run.optuna_trial_id
            if study is not None and not retry:
                session.flush()
                complete_if_done(session, study.id)
        log.warning("run %s lost its worker; %s", run_id, "retry queued" if retry else "no retry")
        if trial_id is not None and self._fail_optuna_trial(trial_id):
            self.mark_synced(run_id)
        # A run reaped before it recorded its trial stays unsynced: the reconciler looks for
        # the orphan trial its worker may have left behind.
        return True

    def _fail_optuna_trial(self, trial_id: int) -> bool:
        """Fail a lost run's Optuna trial; True once it is finished (False: try again later)."""
        try:
            self.db.optuna.set_trial_state_values(trial_id, TrialState.FAIL)
        except (KeyError, optuna.exceptions.UpdateFinishedTrialError):
            return True  # finished already, or deleted with its study: nothing left to fail
        except Exception as error:  # the reconciler retries what fails here
            log.warning("run's Optuna trial %s could not be failed now: %s", trial_id, error)
            return False
        return True

    def mark_synced(self, run_ids: int | Collection[int]) -> None:
        """The runs' Optuna trials have been told their outcome (see service.store.reconcile)."""
        ids = [run_ids] if isinstance(run_ids, int) else list(run_ids)
        if ids:
            with self.db.session() as session:
                self._mark_synced(session, ids)

    @staticmethod
    def _mark_synced(session: Session, run_ids: Collection[int]) -> None:
        session.execute(
            update(Run)
            .where(Run.id.in_(list(run_ids)))
            .values(optuna_synced=True)
            .execution_options(synchronize_session=False)
        )

    def hand_back(self, run_id: int, reason: str = "worker stopped") -> None:
        """Give an unfinished run back (a signal, its study paused): it is retried, same
        parameters, as soon as its study is runnable; the finished epochs stay on this row."""
        with self.db.session() as session:
            run = self._get(session, run_id)
            if run.state != RunState.RUNNING:
                return
            run.heartbeat_at = datetime(1970, 1, 1, tzinfo=utcnow().tzinfo)
        self._reap(run_id, utcnow(), handed_back=True)
        with self.db.session() as session:
            self._get(session, run_id).failure_message = reason
