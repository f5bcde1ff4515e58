"""When a study is done: its budget used and every run ended, or its time limit reached.

Called inside the claim's, the finish's and the reaper's transactions (service.store.runs),
which hold the study's row or its runs: the check and the update commit with the change that
made the study done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from service.db import FINAL_STUDY_STATUSES, Run, RunState, Study, StudyStatus, utcnow


def complete_if_done(session: Session, study_id: int) -> None:
    """A study whose budget (or time) is used and whose runs have all ended is completed."""
    row = session.execute(DONE_COUNTS, {"b_study": study_id}).one()
    used = int(row.used or 0)
    if row.open:
        return
    if row.n_trials is not None and row.n_trials > used:
        limit = time_limit_reached(row.spec, row.started_at, utcnow())
        if limit is not None:
            _complete_for_time(session, study_id, limit, used, row.n_trials)
        return
    complete(session, study_id, used)


def _done_counts() -> Any:
    """One round trip (it runs with every finished run): the counts and the study's limits.
    Built once, with the study bound per call."""
    study_id: Any = bindparam("b_study")
    counts = (
        select(
            func.count().filter(Run.counts_budget.is_(True)).label("used"),
            func.count().filter(Run.state.in_((RunState.QUEUED, RunState.RUNNING))).label("open"),
        )
        .where(Run.study_id == study_id)
        .subquery()
    )
    return (
        select(counts.c.used, counts.c.open, Study.spec, Study.started_at, Study.n_trials)
        .select_from(counts)
        .outerjoin(Study, Study.id == study_id)
    )


DONE_COUNTS = _done_counts()


def stop_for_time(session: Session, study_id: int) -> None:
    """Past timeouts.study_s: no new trial, no queued retry; completed once none runs."""
    now = utcnow()
    session.execute(
        update(Run)
        .where(Run.study_id == study_id, Run.state == RunState.QUEUED)
        .values(
            state=RunState.CANCELLED,
            failure_reason="time_limit",
            failure_message="the study reached its time limit (timeouts.study_s)",
            finished_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    complete_if_done(session, study_id)


def _complete_for_time(
    session: Session, study_id: int, limit: int, used: int, n_trials: int
) -> None:
    now = utcnow()
    session.execute(
        update(Study)
        .where(Study.id == study_id, Study.status.not_in(FINAL_STUDY_STATUSES))
        .values(
            status=StudyStatus.COMPLETED,
            finished_at=now,
            updated_at=now,
            error=f"stopped at its time limit (timeouts.study_s = {limit} s) after "
            f"{used} of its {n_trials} trials",
        )
        .execution_options(synchronize_session=False)
    )


def complete(session: Session, study_id: int, used: int | None = None) -> None:
    """Mark the study completed if its budget (`used` units, None: known to be) is spent."""
    query = update(Study).where(Study.id == study_id, Study.status.not_in(FINAL_STUDY_STATUSES))
    if used is not None:
        query = query.where(Study.n_trials <= used)
    now = utcnow()
    session.execute(
        query.values(
            status=StudyStatus.COMPLETED, finished_at=now, updated_at=now
        ).execution_options(synchronize_session=False)
    )


def time_limit_reached(
    spec: dict[str, Any] | None, started_at: datetime | None, now: datetime
) -> int | None:
    """The study's timeouts.study_s when its time since the first claim has reached it."""
    limit = ((spec or {}).get("timeouts") or {}).get("study_s")
    if not limit or started_at is None:
        return None
    return int(limit) if (now - started_at).total_seconds() >= limit else None
