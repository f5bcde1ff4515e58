"""Study summaries: progress, best trials and per-family statistics, aggregated in SQL.

Summaries are SQL aggregates; the standard deviation comes from sums of squares, so SQLite and
PostgreSQL agree without extensions.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from service.db import FINAL_STUDY_STATUSES, Run, RunState, Study, User
from service.store.base import MISSING, Database
from service.store.queries.paging import (
    PageResult,
    SortColumn,
    check_limit,
    count_rows,
    page_rows,
    parse_sort,
)
from service.store.studies import StudyInfo, study_info


def sample_std(n: int, total: float | None, squares: float | None) -> float | None:
    """Sample standard deviation from count, sum and sum of squares (None below two values)."""
    if n < 2 or total is None or squares is None:
        return None
    spread = squares - total * total / n
    # The sums carry rounding of about n·eps·squares: anything below is no spread at all (equal
    # values gave a std of 1e-8 instead of 0), and it may even come out slightly negative.
    if spread <= n * sys.float_info.epsilon * squares:
        return 0.0
    return math.sqrt(spread / (n - 1))


COMPLETE = Run.state == RunState.COMPLETE
SCORED = and_(COMPLETE, Run.value.is_not(None))


@dataclass(frozen=True)
class BestRun:
    """The best complete trial of a study (or family)."""

    study_id: int
    number: int | None
    value: float | None
    family: str | None
    params: dict[str, Any] | None


@dataclass(frozen=True)
class FamilyStats:
    """Summary of one family's trials in a study."""

    family: str
    runs: int
    n: int
    best: float | None
    mean: float | None
    std: float | None
    mean_test_acc: float | None
    states: dict[str, int] = field(default_factory=dict)  # attempts by state


@dataclass(frozen=True)
class StudyAggregates:
    """Budget-using runs by state, and per-family statistics, from one grouped scan."""

    counts: dict[str, int]
    families: list[FamilyStats]


def study_aggregates(session: Session, study_id: int) -> StudyAggregates:
    """Counts and family statistics of a study in one query grouped by (family, state).

    The grouped columns are all in the covering index ix_as_runs_study_summary (0003), so
    PostgreSQL answers from the index without reading the wide run rows.
    """
    rows = session.execute(
        select(
            Run.family,
            Run.state,
            func.count().label("runs"),
            func.sum(case((Run.counts_budget.is_(True), 1), else_=0)).label("budget_runs"),
            func.count(Run.value).label("n"),
            func.max(Run.value).label("best"),
            func.sum(Run.value).label("total"),
            func.sum(Run.value * Run.value).label("squares"),
            func.count(Run.test_acc).label("n_test"),
            func.sum(Run.test_acc).label("test_total"),
        )
        .where(Run.study_id == study_id)
        .group_by(Run.family, Run.state)
    ).all()
    counts = {state.value: 0 for state in RunState}
    families: dict[str, dict[str, Any]] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + int(row.budget_runs or 0)
        if row.family is None:
            continue  # claimed, not yet told which trial it is
        family = families.setdefault(
            row.family,
            {
                "runs": 0,
                "n": 0,
                "best": None,
                "total": None,
                "squares": None,
                "n_test": 0,
                "test_total": None,
                "states": {state.value: 0 for state in RunState},
            },
        )
        family["runs"] += int(row.runs)
        family["states"][row.state] = family["states"].get(row.state, 0) + int(row.runs)
        if row.state == RunState.COMPLETE and row.n:
            family.update(
                n=int(row.n), best=row.best, total=float(row.total), squares=float(row.squares)
            )
            family.update(n_test=int(row.n_test), test_total=row.test_total)
    stats = [
        FamilyStats(
            family=name,
            runs=f["runs"],
            n=f["n"],
            best=f["best"],
            mean=f["total"] / f["n"] if f["n"] else None,
            std=sample_std(f["n"], f["total"], f["squares"]),
            mean_test_acc=float(f["test_total"]) / f["n_test"] if f["n_test"] else None,
            states=f["states"],
        )
        for name, f in sorted(families.items())
    ]
    return StudyAggregates(counts=counts, families=stats)


def family_stats(session: Session, study_id: int) -> list[FamilyStats]:
    """Per-family counts and value statistics of a study's trials."""
    return study_aggregates(session, study_id).families


def best_run(session: Session, study_id: int) -> BestRun | None:
    """The highest-value complete trial (walks the (study_id, value) index from the top)."""
    row = session.execute(
        select(Run.study_id, Run.trial_number, Run.value, Run.family, Run.params)
        .where(Run.study_id == study_id, SCORED)
        .order_by(Run.value.desc(), Run.id)
        .limit(1)
    ).first()
    if row is None:
        return None
    return BestRun(row.study_id, row.trial_number, row.value, row.family, row.params)


def best_runs(session: Session, study_ids: Sequence[int]) -> dict[int, BestRun]:
    """The best trial of each of several studies (one indexed probe per study on the page)."""
    found = {}
    for study_id in study_ids:
        best = best_run(session, study_id)
        if best is not None:
            found[study_id] = best
    return found


def counts_by_study(session: Session, study_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Budget-using runs by state for several studies in one grouped query.

    Grouped like ix_as_runs_study_summary (study, family, state) and reading only its columns,
    so both databases answer from that index alone.
    """
    if not study_ids:
        return {}
    rows = session.execute(
        select(
            Run.study_id,
            Run.state,
            func.sum(case((Run.counts_budget.is_(True), 1), else_=0)),
        )
        .where(Run.study_id.in_(study_ids))
        .group_by(Run.study_id, Run.family, Run.state)
    ).all()
    out: dict[int, dict[str, int]] = {}
    for study_id, state, n in rows:
        counts = out.setdefault(study_id, {})
        counts[state] = counts.get(state, 0) + int(n or 0)
    return out


@dataclass(frozen=True)
class StudySummary:
    """A study with its progress and best trial (a list row)."""

    study: StudyInfo
    best: BestRun | None


def progress(study: StudyInfo) -> dict[str, int]:
    """Trials by state plus what is left of the budget (nothing is left once a study ended)."""
    started = (RunState.COMPLETE, RunState.PRUNED, RunState.FAILED, RunState.CANCELLED,
               RunState.RUNNING)  # fmt: skip
    counts = {state.value: int(study.counts.get(state, 0)) for state in started}
    waiting = int(study.counts.get(RunState.QUEUED, 0))  # retries waiting for a worker
    unused = max(study.n_trials - sum(counts.values()) - waiting, 0)
    queued = 0 if study.status in FINAL_STUDY_STATUSES else waiting + unused
    return {"budget": study.n_trials, **counts, "queued": queued}


def _best_value_expr() -> ColumnElement[Any]:
    return (
        select(func.max(Run.value))
        .where(Run.study_id == Study.id, SCORED)
        .correlate(Study)
        .scalar_subquery()
    )


def study_sort_keys() -> dict[str, SortColumn]:
    """Sort keys of the study list."""
    return {
        "created": Study.created_at,
        "priority": Study.priority,
        "name": Study.name,
        "best": _best_value_expr(),
        "id": Study.id,
    }


STUDY_SORTS = ("created", "priority", "name", "best", "id")


def list_studies(
    db: Database,
    *,
    statuses: Sequence[str] = (),
    owner: str | None = None,
    q: str | None = None,
    sort: str = "-created",
    limit: int = 50,
    offset: int = 0,
    cursor: str | None = None,
) -> PageResult[StudySummary]:
    """Studies matching the filters, one page, with progress and best trial."""
    check_limit(limit, offset)
    order = parse_sort(sort, study_sort_keys())
    query = select(Study.id).join(User, User.id == Study.owner_id)
    if statuses:
        query = query.where(Study.status.in_(statuses))
    if owner:
        query = query.where(User.name == owner)
    if q:
        needle = q.lower()
        query = query.where(
            or_(
                func.lower(Study.name).contains(needle, autoescape=True),
                func.lower(Study.description).contains(needle, autoescape=True),
            )
        )
    with db.reading() as session:
        total = count_rows(session, query)
        rows, next_cursor = page_rows(
            session, query, order, Study.id, limit=limit, offset=offset, cursor=cursor
        )
        ids = [row["id"] for row in rows]
        studies = _studies_by_id(session, ids)
        versions = {i: studies[i][0].version for i in ids}
        counts = _by_version(db, "counts", versions, lambda i: counts_by_study(session, i))
        best = _by_version(db, "best", versions, lambda i: best_runs(session, i))
        items = [
            StudySummary(
                study=study_info(studies[i][0], studies[i][1], counts.get(i, {})), best=best.get(i)
            )
            for i in ids
        ]
    return PageResult(items, total, limit, offset, next_cursor)


def _by_version(
    db: Database,
    kind: str,
    versions: dict[int, int],
    read: Callable[[list[int]], dict[int, Any]],
) -> dict[int, Any]:
    """`read(ids)` for the studies whose value at their version is not kept yet; the rest kept
    (Database.by_version): after one study of a page changes, only it is read again."""
    found: dict[int, Any] = {}
    missing = []
    for study_id, version in versions.items():
        value = db.by_version.get(kind, study_id, version)
        if value is MISSING:
            missing.append(study_id)
        elif value is not None:
            found[study_id] = value
    fresh = read(missing) if missing else {}
    for study_id in missing:
        db.by_version.put(kind, study_id, versions[study_id], fresh.get(study_id))
    return found | {i: v for i, v in fresh.items() if v is not None}


def _studies_by_id(session: Session, ids: Sequence[int]) -> dict[int, tuple[Study, str]]:
    if not ids:
        return {}
    rows = session.execute(
        select(Study, User.name).join(User, User.id == Study.owner_id).where(Study.id.in_(ids))
    ).all()
    return {study.id: (study, name) for study, name in rows}
