"""The spec's search settings: activation entries, sampler, pruner and time limits.

These sections configure the search, not the trial (the trial's sections come from the contract:
search_space.spec.sections).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)
from pydantic_core import PydanticCustomError

from search_space.registry import FIT_TARGETS
from search_space.spec.limits import (
    MAX_EPOCHS,
    MAX_STUDY_S,
    MAX_TRIAL_S,
    MAX_TRIALS,
    PRUNER_FIELDS,
    SAMPLER_FIELDS,
    SEED_RANGE,
)
from search_space.spec.values import (
    FiniteFloat,
    SearchStr,
    int_or_auto,
    schema_bounds,
    within,
)


def _used_by(table: Mapping[str, tuple[str, ...]], field: str) -> str:
    """The samplers or pruners that read a field, for its description: "tpe, cmaes"."""
    return ", ".join(name for name, fields in table.items() if field in fields)


class ActivationSpec(BaseModel):
    """One family's search settings; its parameters and options are extra keys (registry)."""

    model_config = ConfigDict(extra="allow")

    scope: SearchStr | None = Field(
        default=None, description="shared | per_layer | per_channel (default: the family's)"
    )
    trainable: dict[str, StrictBool] = Field(
        default_factory=dict, description="parameter name -> trained or not (default: the family's)"
    )
    preset: SearchStr | None = Field(default=None, description="one of the family's named presets")
    init_target: SearchStr | None = Field(
        default=None, description="PAU/OPAU: " + " | ".join(FIT_TARGETS)
    )
    init_interval: tuple[FiniteFloat, FiniteFloat] | None = Field(
        default=None, description="PAU/OPAU fit interval, default [-3, 3]"
    )
    clamp: FiniteFloat | None = Field(default=None, gt=0, description="PAU/OPAU: clamp |x| first")

    def values(self) -> dict[str, Any]:
        """The family parameters and options given (fixed values or distributions)."""
        return dict(self.model_extra or {})


class SamplerSpec(BaseModel):
    """Optuna sampler; each field's description names the samplers that use it.

    `grid` runs every configuration once: each activation family with every combination of its
    own searched values and of the searched model/training values (all need a step or choices;
    at most MAX_GRID_POINTS configurations). The study's budget is min(n_trials, grid size), so
    a grid study is complete once searched; a smaller n_trials runs a spread-out part of it.
    Baselines are configurations of the grid (their family's defaults, searched model/training
    fields at the spec default's nearest grid value): they run first and are not run again.
    `seed` only breaks ties there.

    A new spec may set a field its sampler does not use (SAMPLER_FIELDS) only to its default:
    stored specs state every field, defaults included, whatever their sampler.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["tpe", "random", "cmaes", "qmc", "grid", "nsga2"] = Field(
        default="tpe",
        description="grid: every configuration once, budget min(n_trials, grid size); nsga2: "
        "Optuna's NSGA-II (population 50), for multi-objective studies",
    )
    seed: Annotated[StrictInt, within("sampler.seed", *SEED_RANGE)] | None = Field(
        default=None,
        description="tpe, random: trial n draws from (seed, n) in every worker, so the same "
        "history gives the same proposals; qmc: the scramble seed every worker shares (null: "
        "derived from the study); cmaes, nsga2, grid: offset at random per worker process "
        "(docs/workers.md)",
        json_schema_extra=schema_bounds(*SEED_RANGE),
    )
    constant_liar: StrictBool = Field(
        default=True,
        description=f"{_used_by(SAMPLER_FIELDS, 'constant_liar')}: running trials count as "
        "poor results, so that parallel workers spread out",
    )
    multivariate: StrictBool = Field(
        default=True,
        description=f"{_used_by(SAMPLER_FIELDS, 'multivariate')}: model the parameters jointly",
    )
    group: StrictBool = Field(
        default=True,
        description=f"{_used_by(SAMPLER_FIELDS, 'group')}: model conditional spaces (each "
        "family's parameters) apart; needs multivariate",
    )
    n_startup_trials: Annotated[
        StrictInt, within("sampler.n_startup_trials", 0, MAX_TRIALS, cap=True)
    ] = Field(
        default=10,
        description=f"{_used_by(SAMPLER_FIELDS, 'n_startup_trials')}: random trials before "
        "the sampler's model is used",
        json_schema_extra=schema_bounds(0, MAX_TRIALS),
    )
    qmc_type: Literal["sobol", "halton"] = Field(
        default="sobol",
        description=f"{_used_by(SAMPLER_FIELDS, 'qmc_type')}: its low-discrepancy sequence",
    )

    @model_validator(mode="after")
    def _group_needs_multivariate(self) -> SamplerSpec:
        if self.name == "tpe" and self.group and not self.multivariate:
            raise PydanticCustomError(
                "invalid_spec", "{reason}", {"reason": "TPE group=true needs multivariate=true"}
            )
        return self


class PrunerSpec(BaseModel):
    """Optuna pruner; each field's description names the pruners that use it.

    A new spec may set a field its pruner does not use (PRUNER_FIELDS) only to its default:
    stored specs state every field, defaults included, whatever their pruner.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["median", "percentile", "hyperband", "successive_halving", "none"] = Field(
        default="median", description="steps are epochs; none = never prune"
    )
    n_startup_trials: Annotated[
        StrictInt, within("pruner.n_startup_trials", 0, MAX_TRIALS, cap=True)
    ] = Field(
        default=5,
        description=f"{_used_by(PRUNER_FIELDS, 'n_startup_trials')}: trials that finish "
        "before any is pruned",
        json_schema_extra=schema_bounds(0, MAX_TRIALS),
    )
    n_warmup_steps: Annotated[
        StrictInt, within("pruner.n_warmup_steps", 0, MAX_EPOCHS, cap=True)
    ] = Field(
        default=0,
        description=f"{_used_by(PRUNER_FIELDS, 'n_warmup_steps')}: epochs of a trial before it "
        "can be pruned",
        json_schema_extra=schema_bounds(0, MAX_EPOCHS),
    )
    interval_steps: Annotated[
        StrictInt, within("pruner.interval_steps", 1, MAX_EPOCHS, cap=True)
    ] = Field(
        default=1,
        description=f"{_used_by(PRUNER_FIELDS, 'interval_steps')}: epochs between pruning checks",
        json_schema_extra=schema_bounds(1, MAX_EPOCHS),
    )
    percentile: StrictFloat = Field(
        default=25.0,
        gt=0,
        lt=100,
        description=f"{_used_by(PRUNER_FIELDS, 'percentile')}: a trial in this bottom "
        "percentile of the trials at the same epoch is pruned (median is percentile 50)",
    )
    min_resource: Annotated[
        int | Literal["auto"], int_or_auto("pruner.min_resource", 1, MAX_EPOCHS, cap=True)
    ] = Field(
        default="auto",
        description="hyperband (auto = 1), successive_halving (auto: from the first finished "
        "trial): epochs before a trial can be pruned",
        json_schema_extra=schema_bounds(1, MAX_EPOCHS),
    )
    max_resource: Annotated[
        int | Literal["auto"], int_or_auto("pruner.max_resource", 1, MAX_EPOCHS, cap=True)
    ] = Field(
        default="auto",
        description=f"{_used_by(PRUNER_FIELDS, 'max_resource')}: at least min_resource (auto: "
        "from the first finished trial) (epochs)",
        json_schema_extra=schema_bounds(1, MAX_EPOCHS),
    )
    reduction_factor: Annotated[
        StrictInt, within("pruner.reduction_factor", 2, MAX_EPOCHS, cap=True)
    ] = Field(
        default=3,
        description=f"{_used_by(PRUNER_FIELDS, 'reduction_factor')}: 1 in this many trials "
        "goes on at each rung",
        json_schema_extra=schema_bounds(2, MAX_EPOCHS),
    )
    min_early_stopping_rate: Annotated[
        StrictInt, within("pruner.min_early_stopping_rate", 0, MAX_EPOCHS, cap=True)
    ] = Field(
        default=0,
        description=f"{_used_by(PRUNER_FIELDS, 'min_early_stopping_rate')}: its first rung is "
        "at min_resource × reduction_factor ** this",
        json_schema_extra=schema_bounds(0, MAX_EPOCHS),
    )


class TimeoutsSpec(BaseModel):
    """Time limits in seconds."""

    model_config = ConfigDict(extra="forbid")

    trial_s: Annotated[StrictInt, within("timeouts.trial_s", 1, MAX_TRIAL_S, cap=True)] | None = (
        Field(
            default=3600,
            description="one trial's wall time (each seed's, with seeds > 1); null = none",
            json_schema_extra=schema_bounds(1, MAX_TRIAL_S),
        )
    )
    study_s: Annotated[StrictInt, within("timeouts.study_s", 1, MAX_STUDY_S, cap=True)] | None = (
        Field(
            default=None,
            description="the whole study, from its first claim: past it no new trial starts and "
            "queued retries are cancelled; running trials finish, then the study completes with a "
            "note saying so; null = none",
            json_schema_extra=schema_bounds(1, MAX_STUDY_S),
        )
    )
