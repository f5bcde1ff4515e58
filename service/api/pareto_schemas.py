"""Response schemas of a multi-objective study's Pareto front (service.store.queries.pareto).

Apart from service.api.schemas, which is near the module size limit.
"""

from __future__ import annotations

from pydantic import Field

from service.api.schemas import Metric, Out, Params


class ParetoPointOut(Out):
    """One complete trial: validation accuracy (maximised) and its measured cost (minimised)."""

    run_id: int
    number: int = Field(description="the Optuna trial number")
    family: str | None
    params: Params | None
    value: Metric = Field(description="validation accuracy, a fraction")
    cost: Metric = Field(description="the cost, in cost_unit")
    device: str | None = Field(description="where the cost was measured")
    on_front: bool = Field(description="no other complete trial is both as accurate and cheaper")


class ParetoFront(Out):
    """A study's complete trials with a cost and the front among them (Optuna's best_trials)."""

    study_id: int
    objectives: list[str] = Field(description="the spec's objectives; one: no cost, no front")
    cost_kind: str | None = Field(description="step_time | params; null: accuracy only")
    cost_unit: str | None = Field(
        description="parameters, or relative to ReLU (the same model on the same worker)"
    )
    devices: list[str] = Field(
        description="devices the costs were measured on: a step-time ratio holds for its device"
    )
    points: list[ParetoPointOut] = Field(description="every complete trial, by trial number")
    front: list[ParetoPointOut] = Field(description="the front by increasing cost")
