"""A multi-objective study's Pareto front: the complete trials no other complete trial beats.

A study with a cost objective (spec `objectives: [accuracy, step_time | params]`) maximises
validation accuracy and minimises the cost; Optuna is told [value, cost] per trial. A trial is
on the front unless another one is at least as accurate and at most as costly, and strictly
better in one of the two: what Optuna's `study.best_trials` holds (trials with equal values are
on it together). Computed from our runs, the complete attempt of each trial: one indexed read of
two numbers per trial, then one sort.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from service.db import Run, RunState, Study
from service.store.base import Database, NotFound

POINT_COLUMNS = (
    Run.id, Run.trial_number, Run.family, Run.params, Run.value, Run.cost, Run.cost_kind,
    Run.cost_device,
)  # fmt: skip
COST_UNITS = {"params": "parameters", "step_time": "relative to ReLU"}


@dataclass(frozen=True)
class ParetoPoint:
    """One complete trial of a multi-objective study: its accuracy and its cost."""

    run_id: int
    number: int
    family: str | None
    params: dict[str, Any] | None
    value: float  # validation accuracy, maximised
    cost: float  # minimised
    device: str | None  # where the cost was measured
    on_front: bool = False


@dataclass(frozen=True)
class ParetoView:
    """Every complete trial with a cost, and the front among them (by cost, then accuracy)."""

    study_id: int
    objectives: list[str]
    cost_kind: str | None
    cost_unit: str | None
    devices: list[str]  # distinct devices the costs were measured on
    points: list[ParetoPoint]  # by trial number
    front: list[ParetoPoint]  # by increasing cost: the front drawn left to right


def pareto_front(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point dominates (higher value, lower cost), by cost then value."""
    ordered = sorted(points, key=lambda p: (-p.value, p.cost))
    front: list[ParetoPoint] = []
    cheapest_better = math.inf  # the lowest cost among strictly more accurate points
    start = 0
    while start < len(ordered):
        end = start
        while end < len(ordered) and ordered[end].value == ordered[start].value:
            end += 1
        group = ordered[start:end]
        cheapest = group[0].cost  # sorted: the lowest cost of this accuracy
        for point in group:
            if point.cost == cheapest and point.cost < cheapest_better:
                front.append(point)
        cheapest_better = min(cheapest_better, cheapest)
        start = end
    return sorted(front, key=lambda p: (p.cost, -p.value, p.number))


def pareto(db: Database, study_id: int) -> ParetoView:
    """The study's complete trials with a cost and its Pareto front (NotFound: no study)."""
    with db.reading() as session:
        spec = session.scalar(select(Study.spec).where(Study.id == study_id))
        if spec is None:
            raise NotFound(f"study {study_id} does not exist")
        rows = session.execute(
            select(*POINT_COLUMNS)
            .where(
                Run.study_id == study_id,
                Run.state == RunState.COMPLETE,
                Run.value.is_not(None),
                Run.cost.is_not(None),
                Run.trial_number.is_not(None),
            )
            .order_by(Run.trial_number, Run.id)
        ).all()
    objectives = list(spec.get("objectives") or ["accuracy"])
    kind = objectives[1] if len(objectives) > 1 else None
    points = [
        ParetoPoint(r.id, r.trial_number, r.family, r.params, r.value, r.cost, r.cost_device)
        for r in rows
        if r.cost_kind == kind
    ]
    front = pareto_front(points)
    on_front = {p.run_id for p in front}
    return ParetoView(
        study_id=study_id,
        objectives=objectives,
        cost_kind=kind,
        cost_unit=COST_UNITS.get(kind or ""),
        devices=sorted({p.device for p in points if p.device}),
        points=[replace(p, on_front=p.run_id in on_front) for p in points],
        front=[replace(p, on_front=True) for p in front],
    )
