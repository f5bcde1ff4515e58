"""The statements of every trial on the worker path (service.store.runs), built once.

A statement object built once keeps its compiled form's cache key (SQLAlchemy memoizes it on
the object): per call only the parameters are bound. Built per call, each cost Python-level
coercions (~400 per trial in all), a cache key and, for `update(Entity)`, ORM bulk-DML work: a
share of a worker's CPU that decided claim_scale's ratio to plain Optuna when slots outnumber
cores (bench/results/claim_scale-notes.md). Core tables, not the ORM entities. Bind names
differ from the columns they set (SQLAlchemy keeps those for itself).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.db import RUNNABLE_STUDY_STATUSES, Epoch, Run, RunState, Study, StudyStatus, Worker


def study_status(study_id: Any) -> Any:
    """The status of a run's study as a scalar subquery (None once the study is deleted)."""
    return select(Study.status).where(Study.id == study_id).scalar_subquery()


_RUN_TABLE = cast(Table, Run.__table__)
_WORKER_TABLE = cast(Table, Worker.__table__)
_RUNS = _RUN_TABLE.c


def _beat(sqlite_db: bool, column: Any) -> Any:
    """The heartbeat's clock in a statement built once: bound on SQLite, now() on PostgreSQL
    (Database.clock)."""
    return bindparam("b_beat", type_=column.type) if sqlite_db else func.now()


def _epoch_run_update(sqlite_db: bool) -> Any:
    done = bindparam("b_done", type_=_RUNS.epochs_done.type)
    return (
        update(_RUN_TABLE)
        .where(_RUNS.id == bindparam("b_run"))
        .values(
            epochs_done=case((_RUNS.epochs_done < done, done), else_=_RUNS.epochs_done),
            heartbeat_at=case(
                (_RUNS.state == RunState.RUNNING, _beat(sqlite_db, _RUNS.heartbeat_at)),
                else_=_RUNS.heartbeat_at,
            ),
        )
        .returning(_RUNS.state, study_status(_RUNS.study_id))
    )


EPOCH_RUN_UPDATE = {True: _epoch_run_update(True), False: _epoch_run_update(False)}


def _epoch_upsert(insert: Any) -> Any:
    """A run's epoch row, written again over itself (a repeat after a reconnect)."""
    statement = insert(Epoch.__table__)
    values = ("train_loss", "val_acc", "img_per_s", "elapsed_s")
    return statement.on_conflict_do_update(
        index_elements=["run_id", "epoch"], set_={name: statement.excluded[name] for name in values}
    )


EPOCH_UPSERT = {True: _epoch_upsert(sqlite.insert), False: _epoch_upsert(postgresql.insert)}


def _epoch_worker_update(sqlite_db: bool) -> Any:
    workers = _WORKER_TABLE.c
    return (
        update(_WORKER_TABLE)
        .where(workers.id == bindparam("b_worker"))
        .values(
            current_epoch=bindparam("b_epoch", type_=workers.current_epoch.type),
            img_per_s=bindparam("b_rate", type_=workers.img_per_s.type),
            heartbeat_at=_beat(sqlite_db, workers.heartbeat_at),
        )
    )


EPOCH_WORKER_UPDATE = {True: _epoch_worker_update(True), False: _epoch_worker_update(False)}

_STUDY_TABLE = cast(Table, Study.__table__)
_STUDIES = _STUDY_TABLE.c
_CLAIMED_AT = bindparam("b_now", type_=_STUDIES.last_claim_at.type)

# The claim's lock on its study's row, and what the claim reads from it (see _claim_in).
CLAIM_STUDY = (
    update(_STUDY_TABLE)
    .where(_STUDIES.id == bindparam("b_study"), _STUDIES.status.in_(RUNNABLE_STUDY_STATUSES))
    .values(
        last_claim_at=_CLAIMED_AT,
        updated_at=case(
            (_STUDIES.status == StudyStatus.QUEUED, _CLAIMED_AT), else_=_STUDIES.updated_at
        ),
        status=StudyStatus.RUNNING,
        started_at=case((_STUDIES.started_at.is_(None), _CLAIMED_AT), else_=_STUDIES.started_at),
    )
    .returning(_STUDIES.n_trials, _STUDIES.optuna_name, _STUDIES.spec, _STUDIES.started_at)
)

# (budget units used, runs queued or running, oldest queued retry) of one study.
BUDGET = select(
    func.count().filter(_RUNS.counts_budget.is_(True)),
    func.count().filter(_RUNS.state.in_((RunState.QUEUED, RunState.RUNNING))),
    func.min(_RUNS.id).filter(_RUNS.state == RunState.QUEUED),
).where(_RUNS.study_id == bindparam("b_study"))

# Runnable studies, least recently claimed first among equal priorities: round-robin.
CANDIDATES = (
    select(_STUDIES.id)
    .where(_STUDIES.status.in_(RUNNABLE_STUDY_STATUSES))
    .order_by(_STUDIES.priority.desc(), _STUDIES.last_claim_at.asc().nulls_first(), _STUDIES.id)
)
CANDIDATES_AMONG = CANDIDATES.where(_STUDIES.id.in_(bindparam("b_studies", expanding=True)))

FINISH_WORKER_UPDATE = (
    update(_WORKER_TABLE)
    .where(_WORKER_TABLE.c.id == bindparam("b_worker"))
    .values(trials_done=_WORKER_TABLE.c.trials_done + 1, current_run_id=None, current_epoch=None)
)

ATTACH_UPDATE = (
    update(_RUN_TABLE)
    .where(_RUNS.id == bindparam("b_run"))
    .values(
        optuna_trial_id=bindparam("b_trial", type_=_RUNS.optuna_trial_id.type),
        trial_number=bindparam("b_number", type_=_RUNS.trial_number.type),
        params=bindparam("b_params", type_=_RUNS.params.type),
        family=bindparam("b_family", type_=_RUNS.family.type),
        config=bindparam("b_config", type_=_RUNS.config.type),
    )
)
