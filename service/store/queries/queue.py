"""The queue as a scaler sees it: how many runs slots could train now, and how many they train.

One query, answered from indexes: the studies by their key (few are runnable at a time), their
runs' states and budget flags by the covering `ix_as_runs_study_summary` (an index-only scan on
PostgreSQL). A scaler polls it every few seconds, so it must stay cheap at any history size.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import case, func, select

from service.db import RUNNABLE_STUDY_STATUSES, Run, RunState, Study
from service.store.base import Database


@dataclass(frozen=True)
class QueueDepth:
    """Runs a slot could claim now, and runs being trained now (of runnable studies)."""

    runnable: int  # budget left (new trials) plus queued retries of lost attempts
    running: int  # claimed and not finished: each holds a slot

    @property
    def demand(self) -> int:
        """Slots that would all be busy: one per running run and one per runnable trial."""
        return self.runnable + self.running


def queue_depth(db: Database, study_ids: Collection[int] | None = None) -> QueueDepth:
    """The queue of the runnable (queued or running) studies, or of `study_ids` among them.

    Counted as the claim counts (service.store.runs): a study has `n_trials - used` new trials
    left, where `used` counts budget-using runs (a queued retry carries its lost attempt's unit),
    and each queued retry is one more claimable run. Paused, cancelled and finished studies
    count nothing.
    """
    # count(study_id), not count(id): every column read is in the covering index (see above).
    used = func.count(Run.study_id).filter(Run.counts_budget.is_(True))
    per_study = (
        select(
            Study.n_trials.label("n_trials"),
            used.label("used"),
            func.count(Run.study_id).filter(Run.state == RunState.QUEUED).label("queued"),
            func.count(Run.study_id).filter(Run.state == RunState.RUNNING).label("running"),
        )
        .select_from(Study)
        .outerjoin(Run, Run.study_id == Study.id)
        .where(Study.status.in_(RUNNABLE_STUDY_STATUSES))
        .group_by(Study.id, Study.n_trials)
    )
    if study_ids is not None:
        per_study = per_study.where(Study.id.in_(list(study_ids)))
    studies = per_study.subquery()
    fresh = case(
        (studies.c.n_trials > studies.c.used, studies.c.n_trials - studies.c.used), else_=0
    )
    query = select(
        func.coalesce(func.sum(fresh + studies.c.queued), 0),
        func.coalesce(func.sum(studies.c.running), 0),
    )
    with db.reading() as session:
        runnable, running = session.execute(query).one()
    return QueueDepth(runnable=int(runnable), running=int(running))
