"""A worker's held Optuna writes of one trial, and the rows they become (see the package)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from search_space.optuna_access.private import _create_scoped_session, _models

HeldParam = tuple[str, float, BaseDistribution, BaseDistribution | None]


@dataclass
class Held:
    """One trial's writes that this process holds (see `holding_params`)."""

    params: list[HeldParam] = field(default_factory=list)
    steps: list[tuple[int, float]] = field(default_factory=list)  # reported (step, value)
    end: tuple[TrialState, list[float] | None] | None = None  # what `tell` writes
    frozen: FrozenTrial | None = None  # the `Trial`'s own copy (its parameters, its values)


@dataclass(frozen=True)
class HeldWrites:
    """A snapshot of one trial's held writes: `write(session)` inside the caller's transaction,
    then `written()` once it committed. A transaction that rolled back leaves them held."""

    storage: Any
    trial_id: int
    params: tuple[HeldParam, ...]
    steps: tuple[tuple[int, float], ...]
    end: tuple[TrialState, list[float] | None] | None
    ended_here: list[bool] = field(default_factory=list)  # the last write found it running

    @property
    def ends(self) -> bool:
        """Whether the trial's end (`tell`) is among them."""
        return self.end is not None

    def write(self, session: Session) -> None:
        """Write them with this session's connection, in its transaction (not committed here)."""
        self.ended_here[:] = [self.storage.write_in(session, self) and self.end is not None]

    def written(self) -> None:
        """The transaction that wrote them committed: they are no longer held."""
        self.storage.written(self)

    def write_alone(self) -> None:
        """Write them in a transaction of their own."""
        backend: Any = self.storage._backend
        with _create_scoped_session(backend.scoped_session, True) as session:
            self.write(session)
        self.written()


def held_rows(insert: Any, writes: HeldWrites) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """Per Optuna table that has rows among the held writes: its statement (built once per
    dialect) and the rows, to execute as one batch (executemany)."""
    trial_id = writes.trial_id
    if writes.params:
        rows = [
            {"trial_id": trial_id, "param_name": name, "param_value": value,
             "distribution_json": optuna.distributions.distribution_to_json(distribution)}
            for name, value, distribution, _known in writes.params
        ]  # fmt: skip
        yield _statement(insert, "params"), rows
    if writes.steps:
        model = _models.TrialIntermediateValueModel
        rows = []
        for step, value in dict(writes.steps).items():  # a step reported twice: the last value
            stored, step_kind = model.intermediate_value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                         "intermediate_value_type": step_kind})  # fmt: skip
        yield _statement(insert, "steps"), rows
    _state, values = writes.end or (None, None)
    if values:
        value_model = _models.TrialValueModel
        rows = []
        for objective, value in enumerate(values):
            stored, kind = value_model.value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "objective": objective, "value": stored,
                         "value_type": kind})  # fmt: skip
        yield _statement(insert, "values"), rows


# Statements built once per dialect's insert (a statement object keeps its cache key: per call
# only the rows are bound; built per call, each value cost Python-level coercions).
_STATEMENTS: dict[tuple[Any, str], Any] = {}


def _statement(insert: Any, kind: str) -> Any:
    key = (insert, kind)
    if key not in _STATEMENTS:
        _STATEMENTS[key] = _build(insert, kind)
    return _STATEMENTS[key]


def _build(insert: Any, kind: str) -> Any:
    if kind == "params":
        params = _models.TrialParamModel.__table__
        return insert(params).on_conflict_do_nothing(
            index_elements=[params.c.trial_id, params.c.param_name]
        )
    if kind == "steps":
        return _upsert(
            insert, _models.TrialIntermediateValueModel.__table__, "step",
            ("intermediate_value", "intermediate_value_type"),
        )  # fmt: skip
    return _upsert(insert, _models.TrialValueModel.__table__, "objective", ("value", "value_type"))


def _upsert(insert: Any, table: Any, key: str, columns: tuple[str, ...]) -> Any:
    """Rows keyed by (trial_id, `key`), written again over what a row already holds."""
    upsert = insert(table)
    return upsert.on_conflict_do_update(
        index_elements=[table.c.trial_id, table.c[key]],
        set_={name: upsert.excluded[name] for name in columns},
    )


def stored_now(column: str) -> datetime:
    """`datetime.now()` as Optuna's trial model stores it in `column` (datetime_start or
    datetime_complete: local time up to Optuna 4, naive UTC since 5), for a statement that
    writes the column directly: set on a model object, read back from the column's attribute."""
    model = _models.TrialModel
    probe = model()
    setattr(probe, column, datetime.now())
    mapped = sa_inspect(model).get_property_by_column(model.__table__.c[column])
    return cast(datetime, getattr(probe, mapped.key))
