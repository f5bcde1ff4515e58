"""A study's trials: filtered, sorted pages, one trial with its retry history, and all of them.

Filters and sorts run in SQL; each sort key has an index (study_id, key[, id]), so a page is a
short index range scan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, false, func, select, type_coerce
from sqlalchemy.orm import Session

from service.db import Epoch, Run, RunState, Study
from service.store.base import Database, NotFound
from service.store.queries.paging import (
    InvalidQuery,
    PageResult,
    SortColumn,
    check_limit,
    count_rows,
    page_rows,
    parse_sort,
)

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
    Run.progress,
)
TRIAL_FIELDS = tuple(column.key for column in TRIAL_COLUMNS)
# A multi-objective study's measured cost (migration 0009), in exports.
COST_COLUMNS = (Run.cost, Run.cost_kind, Run.cost_device)

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


def trial_row(row: Any) -> dict[str, Any]:
    """A trial's fields; live progress only while it runs (a finished one's is stale)."""
    out = {key: row[key] for key in TRIAL_FIELDS}
    if out["state"] != RunState.RUNNING:
        out["progress"] = None
    return out


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


def require_study(session: Session, study_id: int) -> None:
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
    check_limit(limit, offset)
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
    with db.reading() as session:
        total = count_rows(session, select(Run.id).where(*where))
        if not total:  # only an empty answer needs telling "no such study" from "no match"
            require_study(session, study_id)
        rows, next_cursor = page_rows(
            session,
            select(*TRIAL_COLUMNS).where(*where),
            order,
            Run.id,
            limit=limit,
            offset=offset,
            cursor=cursor,
        )
    items = [trial_row(row) for row in rows]
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
    with db.reading() as session:
        require_study(session, study_id)
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
        row=trial_row(row),
        config=row["config"],
        record=row["record"],
        log_tail=row["log_tail"],
        epochs=[dict(e) for e in epochs],
        attempts=attempts,
    )


# Attempts of one trial: max_attempts is a handful, so a longer chain is broken data.
MAX_ATTEMPTS_SHOWN = 100


def _attempt_chain(session: Session, study_id: int, run_id: int) -> list[dict[str, Any]]:
    """Every attempt linked to run_id through retry_of, oldest first (a few rows at most).

    retry_of links are data, not a promise: rows pointing at each other (a cycle) or an endless
    chain must not hang the request, so each walk stops at a run it has already seen and after
    MAX_ATTEMPTS_SHOWN steps.
    """
    first, seen = run_id, {run_id}
    while len(seen) < MAX_ATTEMPTS_SHOWN:
        parent = session.scalar(
            select(Run.retry_of).where(Run.id == first, Run.study_id == study_id)
        )
        if parent is None or parent in seen:
            break
        first = parent
        seen.add(parent)
    chain = [first]
    while len(chain) < MAX_ATTEMPTS_SHOWN:
        child = session.scalar(
            select(Run.id)
            .where(Run.study_id == study_id, Run.retry_of == chain[-1])
            .order_by(Run.id)
            .limit(1)
        )
        if child is None or child in chain:
            break
        chain.append(child)
    columns = [c for c in TRIAL_COLUMNS if c.key in ATTEMPT_FIELDS]
    rows = session.execute(select(*columns).where(Run.id.in_(chain)).order_by(Run.id))
    return [dict(row) for row in rows.mappings()]


def export_trials(db: Database, study_id: int) -> list[dict[str, Any]]:
    """Every trial (attempt) of a study with params and config, in trial order (for exports)."""
    with db.reading() as session:
        require_study(session, study_id)
        rows = (
            session.execute(
                select(*TRIAL_COLUMNS, Run.config, *COST_COLUMNS)
                .where(Run.study_id == study_id)
                .order_by(Run.trial_number.asc().nulls_last(), Run.id)
            )
            .mappings()
            .all()
        )
    return [dict(row) for row in rows]
