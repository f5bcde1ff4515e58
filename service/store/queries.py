"""Read queries for the API and dashboard: filtering, sorting, pagination and summaries in SQL.

Nothing here loads a study's trials into Python to page or aggregate them: pages are
`LIMIT/OFFSET` or keyset cursors, totals are `COUNT(*)`, summaries are SQL aggregates (the
standard deviation from sums of squares, so SQLite and PostgreSQL agree without extensions).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.db import Epoch, Run, Study, User, Worker
from service.store.base import Database, NotFound
from service.store.studies import FINAL, RUN_STATES, StudyInfo, study_info

T = TypeVar("T")

MAX_LIMIT = 500
# A mapped column (Run.value) or any SQL expression (a correlated subquery) to sort by.
SortColumn = ColumnElement[Any] | InstrumentedAttribute[Any]


class InvalidQuery(ValueError):
    """A filter, sort or cursor the caller gave cannot be used; `loc` names the parameter."""

    def __init__(self, loc: str, msg: str) -> None:
        super().__init__(f"{loc}: {msg}")
        self.loc = loc
        self.msg = msg


@dataclass(frozen=True)
class PageResult(Generic[T]):
    """One page of rows and how to get the next."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next_cursor: str | None


# -- sorting and keyset cursors --------------------------------------------------------------
@dataclass(frozen=True)
class Sort:
    """A sort key: `name` (with a leading '-' for descending) resolved to a SQL expression."""

    name: str
    expr: SortColumn
    descending: bool


def parse_sort(sort: str, keys: dict[str, SortColumn]) -> Sort:
    """'-value' → Sort(value, descending); unknown keys are refused naming the valid ones."""
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    if name not in keys:
        valid = ", ".join(sorted(keys))
        raise InvalidQuery(
            "query.sort", f"unknown sort key {name!r}; valid: {valid} (prefix - for descending)"
        )
    return Sort(name=sort, expr=keys[name], descending=descending)


def _ordered(sort: Sort, id_col: SortColumn) -> list[Any]:
    if sort.descending:
        return [sort.expr.desc(), id_col.desc()]
    return [sort.expr.asc(), id_col.asc()]


def _id_beyond(sort: Sort, id_col: SortColumn, last_id: int) -> ColumnElement[bool]:
    return id_col < last_id if sort.descending else id_col > last_id


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"}:
        return datetime.fromisoformat(value["t"])
    return value


def encode_cursor(sort: Sort, value: Any, last_id: int) -> str:
    """An opaque cursor pointing just after (value, id) in `sort` order."""
    raw = json.dumps([sort.name, _encode_value(value), last_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort) -> tuple[Any, int]:
    """(value, id) of a cursor made for the same sort; InvalidQuery otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, value, last_id = json.loads(raw)
        value = _decode_value(value)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidQuery("query.cursor", "not a cursor this API returned") from error
    if name != sort.name:
        raise InvalidQuery(
            "query.cursor", f"cursor was made for sort {name!r}; use the same sort or drop it"
        )
    if not isinstance(last_id, int) or not (
        value is None or isinstance(value, (int, float, str, datetime))
    ):
        raise InvalidQuery("query.cursor", "not a cursor this API returned")
    return value, last_id


def _fetch(session: Session, query: Select[Any], offset: int, limit: int) -> list[Any]:
    return list(session.execute(query.offset(offset).limit(limit)).mappings().all())


def _page(
    session: Session,
    query: Select[Any],
    sort: Sort,
    id_col: SortColumn,
    *,
    limit: int,
    offset: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """Rows of one page (mappings) and the cursor after its last row.

    The order is: rows with a sort value (ascending or descending, ties by id), then rows without
    one (unfinished trials) by id. It is read as two queries, valued rows first, because each is
    then an index range scan in either direction on both databases (a single
    `ORDER BY x DESC NULLS LAST` cannot walk an ascending index). One extra row tells whether a
    next page exists.
    """
    query = query.add_columns(sort.expr.label("_sort_value"), id_col.label("_sort_id"))
    value: Any = None
    last_id: int | None = None
    if cursor:
        value, last_id = decode_cursor(cursor, sort)
    in_nulls = last_id is not None and value is None
    rows: list[Any] = []
    head_skipped = 0
    if not in_nulls:
        head = query.where(sort.expr.is_not(None))
        if last_id is not None:
            bound = literal(value, type_=sort.expr.type)
            beyond = sort.expr < bound if sort.descending else sort.expr > bound
            same = and_(sort.expr == bound, _id_beyond(sort, id_col, last_id))
            head = head.where(or_(beyond, same))
        rows = _fetch(session, head.order_by(*_ordered(sort, id_col)), offset, limit + 1)
        if not rows and offset:
            head_skipped = _count(session, head)  # the offset stepped over every valued row
    if len(rows) <= limit:
        tail = query.where(sort.expr.is_(None))
        if in_nulls and last_id is not None:
            tail = tail.where(_id_beyond(sort, id_col, last_id))
        tail_offset = 0 if rows else max(offset - head_skipped, 0)
        by_id = id_col.desc() if sort.descending else id_col.asc()
        rows += _fetch(session, tail.order_by(by_id), tail_offset, limit + 1 - len(rows))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(sort, last["_sort_value"], last["_sort_id"])
    return rows, next_cursor


def _count(session: Session, query: Select[Any]) -> int:
    return int(
        session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    )


def _check_limit(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("query.limit", f"must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise InvalidQuery("query.offset", "must be 0 or more")


# -- aggregates ----------------------------------------------------------------------------------
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


COMPLETE = Run.state == "complete"
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
    counts = dict.fromkeys(RUN_STATES, 0)
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
                "states": dict.fromkeys(RUN_STATES, 0),
            },
        )
        family["runs"] += int(row.runs)
        family["states"][row.state] = family["states"].get(row.state, 0) + int(row.runs)
        if row.state == "complete" and row.n:
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


# -- studies -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudySummary:
    """A study with its progress and best trial (a list row)."""

    study: StudyInfo
    best: BestRun | None


@dataclass(frozen=True)
class StudyDetailView:
    """A study with its progress, best trial and per-family summary."""

    study: StudyInfo
    best: BestRun | None
    families: list[FamilyStats]


def progress(study: StudyInfo) -> dict[str, int]:
    """Trials by state plus what is left of the budget (nothing is left once a study ended)."""
    counts = {
        state: int(study.counts.get(state, 0))
        for state in ("complete", "pruned", "failed", "cancelled", "running")
    }
    waiting = int(study.counts.get("queued", 0))  # retries waiting for a worker
    unused = max(study.n_trials - sum(counts.values()) - waiting, 0)
    queued = 0 if study.status in FINAL else waiting + unused
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
    _check_limit(limit, offset)
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
    with db.session() as session:
        total = _count(session, query)
        rows, next_cursor = _page(
            session, query, order, Study.id, limit=limit, offset=offset, cursor=cursor
        )
        ids = [row["id"] for row in rows]
        studies = _studies_by_id(session, ids)
        counts = counts_by_study(session, ids)
        best = best_runs(session, ids)
        items = [
            StudySummary(
                study=study_info(studies[i][0], studies[i][1], counts.get(i, {})), best=best.get(i)
            )
            for i in ids
        ]
    return PageResult(items, total, limit, offset, next_cursor)


def _studies_by_id(session: Session, ids: Sequence[int]) -> dict[int, tuple[Study, str]]:
    if not ids:
        return {}
    rows = session.execute(
        select(Study, User.name).join(User, User.id == Study.owner_id).where(Study.id.in_(ids))
    ).all()
    return {study.id: (study, name) for study, name in rows}


def study_detail(db: Database, study_id: int) -> StudyDetailView:
    """A study with progress, best trial and per-family summary (a handful of indexed queries)."""
    with db.session() as session:
        row = session.execute(
            select(Study, User.name)
            .join(User, User.id == Study.owner_id)
            .where(Study.id == study_id)
        ).first()
        if row is None:
            raise NotFound(f"study {study_id} does not exist")
        aggregates = study_aggregates(session, study_id)
        info = study_info(row[0], row[1], aggregates.counts)
        return StudyDetailView(
            study=info, best=best_run(session, study_id), families=aggregates.families
        )


# -- trials --------------------------------------------------------------------------------------
TRIAL_COLUMNS = (
    Run.id.label("run_id"),
    Run.trial_number.label("number"),
    Run.attempt,
    Run.retry_of,
    Run.state,
    Run.family,
    Run.params,
    Run.value,
    Run.value_std,
    Run.test_acc,
    Run.epochs_done,
    Run.duration_s,
    Run.img_per_s,
    Run.peak_mem_bytes,
    Run.failure_reason,
    Run.failure_message,
    Run.failure_epoch,
    Run.worker_id,
    Run.created_at,
    Run.started_at,
    Run.finished_at,
)
TRIAL_FIELDS = tuple(column.key for column in TRIAL_COLUMNS)

# Each key has an index (study_id, key[, id]) so a page is a short index range scan (0002, 0003).
TRIAL_SORT_KEYS: dict[str, SortColumn] = {
    "number": Run.trial_number,
    "value": Run.value,
    "test_acc": Run.test_acc,
    "duration_s": Run.duration_s,
    "img_per_s": Run.img_per_s,
    "epochs_done": Run.epochs_done,
    "finished": Run.finished_at,
}
TRIAL_SORTS = tuple(TRIAL_SORT_KEYS)


@dataclass(frozen=True)
class ParamRange:
    """`name:low:high` — a numeric Optuna parameter within [low, high] (either bound optional)."""

    name: str
    low: float | None
    high: float | None

    @classmethod
    def parse(cls, text: str) -> ParamRange:
        """Parse `smu.alpha:0.1:0.3`, `smu.alpha:0.1:` or `smu.alpha::0.3`."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise InvalidQuery(
                "query.param", f"{text!r} is not NAME:LOW:HIGH (e.g. smu.alpha:0.1:0.3)"
            )
        name, low, high = parts
        try:
            bounds = [float(b) if b.strip() else None for b in (low, high)]
        except ValueError as error:
            raise InvalidQuery(
                "query.param", f"{text!r}: bounds must be numbers or empty"
            ) from error
        if all(b is None for b in bounds):
            raise InvalidQuery("query.param", f"{text!r}: give at least one bound")
        if any(b is not None and not math.isfinite(b) for b in bounds):
            raise InvalidQuery("query.param", f"{text!r}: bounds must be finite")
        return cls(name=name, low=bounds[0], high=bounds[1])


def numeric_param(name: str, sqlite: bool) -> ColumnElement[Any]:
    """A numeric Optuna parameter of a run, NULL when absent or not a number (never a cast error)."""
    if sqlite:
        path = '$."' + name.replace('"', '\\"') + '"'
        kind = func.json_type(Run.params, path)
        number = func.json_extract(Run.params, path)
        return case((kind.in_(("integer", "real")), type_coerce(number, Float)))
    element = Run.params.op("->")(name)
    text_value = Run.params.op("->>")(name)
    return case((func.jsonb_typeof(element) == "number", cast(text_value, Float)))


def _trial_filters(
    sqlite: bool,
    study_id: int,
    *,
    states: Sequence[str],
    families: Sequence[str],
    params: Sequence[ParamRange],
    value_min: float | None,
    value_max: float | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [Run.study_id == study_id]
    if states:
        where.append(Run.state.in_(states))
    if families:
        where.append(Run.family.in_(families))
    if value_min is not None:
        where.append(Run.value >= value_min)
    if value_max is not None:
        where.append(Run.value <= value_max)
    for param in params:
        expr = numeric_param(param.name, sqlite)
        if param.low is not None:
            where.append(expr >= param.low)
        if param.high is not None:
            where.append(expr <= param.high)
        if param.low is not None and param.high is not None and param.low > param.high:
            where.append(false())  # an empty range matches nothing (rather than an error)
    return where


def _require_study(session: Session, study_id: int) -> None:
    if session.scalar(select(Study.id).where(Study.id == study_id)) is None:
        raise NotFound(f"study {study_id} does not exist")


def list_trials(
    db: Database,
    study_id: int,
    *,
    states: Sequence[str] = (),
    families: Sequence[str] = (),
    params: Sequence[ParamRange] = (),
    value_min: float | None = None,
    value_max: float | None = None,
    sort: str = "number",
    limit: int = 50,
    offset: int = 0,
    cursor: str | None = None,
) -> PageResult[dict[str, Any]]:
    """One page of a study's trials (attempts), filtered and sorted in SQL, with the total."""
    _check_limit(limit, offset)
    order = parse_sort(sort, TRIAL_SORT_KEYS)
    where = _trial_filters(
        db.sqlite,
        study_id,
        states=states,
        families=families,
        params=params,
        value_min=value_min,
        value_max=value_max,
    )
    with db.session() as session:
        total = _count(session, select(Run.id).where(*where))
        if not total:  # only an empty answer needs telling "no such study" from "no match"
            _require_study(session, study_id)
        rows, next_cursor = _page(
            session,
            select(*TRIAL_COLUMNS).where(*where),
            order,
            Run.id,
            limit=limit,
            offset=offset,
            cursor=cursor,
        )
    items = [{key: row[key] for key in TRIAL_FIELDS} for row in rows]
    return PageResult(items, total, limit, offset, next_cursor)


@dataclass(frozen=True)
class TrialView:
    """One trial: its latest attempt's row, epochs and the whole retry history."""

    row: dict[str, Any]
    config: dict[str, Any] | None
    record: dict[str, Any] | None
    log_tail: str | None
    epochs: list[dict[str, Any]]
    attempts: list[dict[str, Any]]


ATTEMPT_FIELDS = (
    "run_id", "number", "attempt", "state", "failure_reason", "failure_message", "worker_id",
    "value", "started_at", "finished_at",
)  # fmt: skip


def trial_detail(db: Database, study_id: int, number: int) -> TrialView:
    """Trial `number` of a study with its config, epochs, record and attempts."""
    with db.session() as session:
        _require_study(session, study_id)
        row = (
            session.execute(
                select(*TRIAL_COLUMNS, Run.config, Run.record, Run.log_tail)
                .where(Run.study_id == study_id, Run.trial_number == number)
                .order_by(Run.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"study {study_id} has no trial {number}")
        epochs = (
            session.execute(
                select(
                    Epoch.epoch, Epoch.train_loss, Epoch.val_acc, Epoch.img_per_s, Epoch.elapsed_s
                )
                .where(Epoch.run_id == row["run_id"])
                .order_by(Epoch.epoch)
            )
            .mappings()
            .all()
        )
        attempts = _attempt_chain(session, study_id, row["run_id"])
    return TrialView(
        row={key: row[key] for key in TRIAL_FIELDS},
        config=row["config"],
        record=row["record"],
        log_tail=row["log_tail"],
        epochs=[dict(e) for e in epochs],
        attempts=attempts,
    )


def _attempt_chain(session: Session, study_id: int, run_id: int) -> list[dict[str, Any]]:
    """Every attempt linked to run_id through retry_of, oldest first (a few rows at most)."""
    first = run_id
    while (parent := session.scalar(select(Run.retry_of).where(Run.id == first))) is not None:
        first = parent
    chain = [first]
    while (
        child := session.scalar(
            select(Run.id)
            .where(Run.study_id == study_id, Run.retry_of == chain[-1])
            .order_by(Run.id)
            .limit(1)
        )
    ) is not None and child not in chain:
        chain.append(child)
    columns = [c for c in TRIAL_COLUMNS if c.key in ATTEMPT_FIELDS]
    rows = session.execute(select(*columns).where(Run.id.in_(chain)).order_by(Run.id))
    return [dict(row) for row in rows.mappings()]


def export_trials(db: Database, study_id: int) -> list[dict[str, Any]]:
    """Every trial (attempt) of a study with params and config, in trial order (for exports)."""
    with db.session() as session:
        _require_study(session, study_id)
        rows = (
            session.execute(
                select(*TRIAL_COLUMNS, Run.config)
                .where(Run.study_id == study_id)
                .order_by(Run.trial_number.asc().nulls_last(), Run.id)
            )
            .mappings()
            .all()
        )
    return [dict(row) for row in rows]


# -- leaderboard -------------------------------------------------------------------------------
DEFAULT_BASELINE = "relu"
RANKED_BY = "best"
RANKING = (
    "Families are ranked by best: the highest validation accuracy among their complete trials "
    "(the tuned configuration a search is after; mean and median also reflect how wide a "
    "family's search ranges are). Ties go to the higher mean, then the name; families without "
    "a complete trial come last. n, mean ± std, median, test accuracy and the differences to "
    "the baseline family are columns."
)


@dataclass(frozen=True)
class LeaderRow:
    """One family of a study against the baseline family (statistics of complete trials)."""

    family: str
    rank: int  # 1 = first, in the order of rank_key
    n: int  # complete trials with a value
    best: float | None
    best_number: int | None  # the best trial
    best_std: float | None  # its standard deviation over seeds (seeds > 1)
    best_test_acc: float | None  # its test accuracy
    mean: float | None
    std: float | None  # sample standard deviation over the family's complete trials
    median: float | None
    mean_test_acc: float | None
    delta_vs_baseline: float | None  # mean minus the baseline family's mean
    delta_best_vs_baseline: float | None  # best minus the baseline family's best
    is_baseline: bool
    states: dict[str, int]  # attempts by state


@dataclass(frozen=True)
class LeaderboardView:
    """A study's families in rank order, with the baseline they are compared against."""

    baseline: str
    ranked_by: str
    rows: list[LeaderRow]


def baseline_family(spec: dict[str, Any]) -> str:
    """The family trials are compared against: the spec's first baseline, else relu."""
    baselines = spec.get("baselines") or []
    if isinstance(baselines, list) and baselines:
        first = baselines[0]
        if isinstance(first, str):
            return first
        if isinstance(first, dict) and isinstance(first.get("family"), str):
            return str(first["family"])
    return DEFAULT_BASELINE


def rank_key(stats: FamilyStats) -> tuple[bool, float, float, str]:
    """The one order of families, for the API, the dashboard and every export (see RANKING)."""
    best = stats.best if stats.best is not None and math.isfinite(stats.best) else None
    mean = stats.mean if stats.mean is not None and math.isfinite(stats.mean) else None
    return (
        best is None,
        -(best if best is not None else 0.0),
        -(mean if mean is not None else -math.inf),
        stats.family,
    )


def leaderboard(db: Database, study_id: int) -> LeaderboardView:
    """Every family with a trial, ranked by rank_key, each against the baseline family.

    Three statements whatever the study's size: the grouped aggregates (answered from the
    covering index), then one probe per family for its best trial and one for its median.
    """
    with db.session() as session:
        spec = session.scalar(select(Study.spec).where(Study.id == study_id))
        if spec is None:
            raise NotFound(f"study {study_id} does not exist")
        stats = sorted(family_stats(session, study_id), key=rank_key)
        scored = {s.family: s.n for s in stats if s.n}
        best_trials = _best_trials(session, study_id, list(scored))
        medians = _medians(session, study_id, scored)
    baseline = baseline_family(dict(spec))
    base = next((s for s in stats if s.family == baseline), None)
    rows = []
    for rank, s in enumerate(stats, start=1):
        number, best_std, best_test = best_trials.get(s.family, (None, None, None))
        rows.append(
            LeaderRow(
                family=s.family,
                rank=rank,
                n=s.n,
                best=s.best,
                best_number=number,
                best_std=best_std,
                best_test_acc=best_test,
                mean=s.mean,
                std=s.std,
                median=medians.get(s.family),
                mean_test_acc=s.mean_test_acc,
                delta_vs_baseline=_delta(s.mean, base.mean if base else None),
                delta_best_vs_baseline=_delta(s.best, base.best if base else None),
                is_baseline=s.family == baseline,
                states=dict(s.states),
            )
        )
    return LeaderboardView(baseline=baseline, ranked_by=RANKED_BY, rows=rows)


def _delta(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def _best_trials(
    session: Session, study_id: int, families: Sequence[str]
) -> dict[str, tuple[int | None, float | None, float | None]]:
    """(number, value_std, test_acc) of each family's best trial: one statement, an index probe
    per family."""
    if not families:
        return {}
    probes = [
        select(Run.family, Run.trial_number, Run.value_std, Run.test_acc)
        .where(Run.study_id == study_id, Run.family == family, SCORED)
        .order_by(Run.value.desc(), Run.id)
        .limit(1)
        .subquery()
        for family in families
    ]
    statement = union_all(
        *(select(p.c.family, p.c.trial_number, p.c.value_std, p.c.test_acc) for p in probes)
    )
    return {family: (number, std, test) for family, number, std, test in session.execute(statement)}


def _medians(session: Session, study_id: int, counts: dict[str, int]) -> dict[str, float]:
    """Each family's median value: the one or two middle values, read in index order."""
    if not counts:
        return {}
    probes = [
        select(Run.family, Run.value)
        .where(Run.study_id == study_id, Run.family == family, SCORED)
        .order_by(Run.value, Run.id)
        .offset((n - 1) // 2)
        .limit(1 if n % 2 else 2)
        .subquery()
        for family, n in counts.items()
    ]
    middle: dict[str, list[float]] = {}
    for family, value in session.execute(
        union_all(*(select(p.c.family, p.c.value) for p in probes))
    ):
        middle.setdefault(family, []).append(float(value))
    return {family: sum(values) / len(values) for family, values in middle.items()}


# -- workers -------------------------------------------------------------------------------------
def list_workers(db: Database, grace_s: float) -> list[dict[str, Any]]:
    """Workers with their current trial, heartbeat age and whether they went silent."""
    with db.session() as session:
        now = db.now(session)  # the clock heartbeats are written with (Database.clock)
        rows = session.execute(
            select(Worker, Run.study_id, Run.trial_number)
            .outerjoin(Run, Run.id == Worker.current_run_id)
            .order_by(Worker.heartbeat_at.desc(), Worker.id)
        ).all()
    out = []
    for worker, study_id, number in rows:
        beat = (
            worker.heartbeat_at
            if worker.heartbeat_at.tzinfo
            else worker.heartbeat_at.replace(tzinfo=now.tzinfo)
        )
        age = max((now - beat).total_seconds(), 0.0)
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
                "stale": worker.status in ("idle", "busy") and age > grace_s,
                "current_run_id": worker.current_run_id,
                "current_study_id": study_id,
                "current_trial_number": number,
                "current_epoch": worker.current_epoch,
                "img_per_s": worker.img_per_s,
                "trials_done": worker.trials_done,
            }
        )
    return out
