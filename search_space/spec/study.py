"""The study spec: what a user submits (YAML or JSON), validated and versioned. Torch-free.

Activation entries are flat: `smu: {alpha: {low: 0, high: 0.5}, mu: 1.0, scope: per_layer,
trainable: {mu: true}}` — keys are the family's parameters and options (registry) plus scope,
trainable, preset, init_target, init_interval and clamp. The dataset, model and training
sections come from the trial contract (search_space.spec.sections).

Model recipes: a spec whose model is fixed to one with a recipe of its own (search_space.recipes:
the proxy) takes the recipe's value for every training field it leaves out, `augment` key by key;
fields it gives win. The parsed spec states those values, so a stored spec shows what trials use.

Budget: `n_trials` trials (1..MAX_TRIALS), baselines included. The grid sampler runs each
configuration of the spec once and then the study is complete, so its budget is
min(n_trials, grid size); its baselines are configurations of the grid (see SamplerSpec).

`StudySpec.model_validate` raises pydantic's ValidationError with the same locations as
`parse_spec`'s SpecError, so the API can also use the model directly as a request body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from search_space.recipes import spec_recipe
from search_space.registry import family_names, get_family
from search_space.spec import checks
from search_space.spec.dims import search_dims
from search_space.spec.grid import grid_size, is_continuous
from search_space.spec.limits import (
    MAX_DESCRIPTION_CHARS,
    MAX_GRID_POINTS,
    MAX_SEEDS,
    MAX_TRIALS,
    PRIORITY_RANGE,
    PRUNER_FIELDS,
    SAMPLER_FIELDS,
    SEED_RANGE,
)
from search_space.spec.names import keys_at
from search_space.spec.search import ActivationSpec, PrunerSpec, SamplerSpec, TimeoutsSpec
from search_space.spec.sections import (
    AUGMENT_DOMAINS,
    MODEL_DOMAINS,
    TRAINING_DOMAINS,
    AugmentSpec,
    DatasetSpec,
    ModelSpec,
    TrainingSpec,
)
from search_space.spec.values import (
    SUBMISSION,
    Errors,
    SearchDim,
    SpecError,
    at_submission,
    exact_int,
    schema_bounds,
    within,
)
from search_space.spelling import did_you_mean, with_hint

Objective = Literal["accuracy", "step_time", "params"]  # search_space.spec.limits.OBJECTIVES


def _accuracy_only() -> list[Objective]:
    return ["accuracy"]


class StudySpec(BaseModel):
    """A study: data, model, training, activation families to search, sampler and budget."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[Literal[1], exact_int("version")] = Field(
        default=1, description="the spec format's version"
    )
    name: StrictStr = Field(
        min_length=1, max_length=200, description="the study's name (not blank)"
    )
    description: StrictStr = Field(
        default="",
        description="free text shown with the study",
        json_schema_extra={"maxLength": MAX_DESCRIPTION_CHARS},
    )
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(
        default_factory=TrainingSpec,
        description="a model with a recipe (proxy) takes the recipe's value for each field "
        "left out, instead of the generic default (docs/workers.md)",
    )
    activations: dict[str, ActivationSpec] = Field(
        min_length=1, description="family name -> its ranges; one family is picked per trial"
    )
    baselines: list[StrictStr] = Field(
        default_factory=list,
        description="families enqueued first at their defaults (added to activations if absent),"
        " each at most once; model/training values are the sampler's, except on a grid (see "
        "sampler)",
    )
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    objectives: list[Objective] = Field(
        default_factory=_accuracy_only,
        description="what the study optimises: validation accuracy (maximised), optionally "
        "with one measured cost (minimised): step_time = the training step time relative to "
        "ReLU on the same model and worker, params = the model's parameter count. Two "
        "objectives need a multi-objective sampler (tpe, random, qmc, grid, nsga2) and pruner "
        "none; Optuna keeps the Pareto front (docs/campaigns.md)",
    )
    n_trials: Annotated[StrictInt, within("n_trials", 1, MAX_TRIALS)] = Field(
        default=20,
        description="the study's budget of trials, baselines included (grid: see sampler)",
        json_schema_extra=schema_bounds(1, MAX_TRIALS),
    )
    seeds: Annotated[StrictInt, within("seeds", 1, MAX_SEEDS)] = Field(
        default=1,
        description="seeds per configuration (each trial trains this many times)",
        json_schema_extra=schema_bounds(1, MAX_SEEDS),
    )
    seed: Annotated[StrictInt, within("seed", *SEED_RANGE)] = Field(
        default=0,
        description="training seed of a trial's first run",
        json_schema_extra=schema_bounds(*SEED_RANGE),
    )
    repeats: Literal["reseed", "reuse"] = Field(
        default="reseed",
        description="a trial whose configuration and seed were trained already: reseed = train "
        "it again with the next unused seed (the repeat adds evidence); reuse = take the "
        "recorded result without training (the run names its source)",
    )
    reuse: Literal["study", "team", "none"] = Field(
        default="study",
        description="where a recorded training is looked for: this study; team = every study "
        "of the database with the same data and training code; none = never (train every "
        "trial, identical ones included)",
    )
    enqueue: list[dict[str, StrictBool | StrictInt | StrictFloat | StrictStr]] = Field(
        default_factory=list,
        description="configurations to run first, after the baselines, each as Optuna params "
        "({activation: smu, smu.alpha: 0.2, training.lr: 0.05}); searched parameters left out "
        "are the sampler's. Confirm studies and campaign stages are made of them",
    )
    priority: Annotated[StrictInt, within("priority", *PRIORITY_RANGE)] = Field(
        default=0,
        description="higher runs first (workers claim the highest-priority runnable study)",
        json_schema_extra=schema_bounds(*PRIORITY_RANGE),
    )
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)

    @model_validator(mode="before")
    @classmethod
    def _model_recipe_defaults(cls, data: Any) -> Any:
        """A model with a recipe (the proxy) takes its values for the training fields left out."""
        if not isinstance(data, Mapping):
            return data
        training = _given_training(data.get("training", {}))
        defaults = model_training_defaults(data.get("model"))
        if training is None or not defaults:
            return data
        augment = training.get("augment", {})
        if isinstance(augment, Mapping):
            training["augment"] = {**defaults.pop("augment", {}), **augment}
        return {**data, "training": {**defaults, **training}}

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str, info: ValidationInfo) -> str:
        # A new spec's only (SUBMISSION): nothing but people read the name.
        if at_submission(info) and not value.strip():
            raise PydanticCustomError(
                "invalid_spec", "{reason}", {"reason": "name must not be blank"}
            )
        return value

    @field_validator("description")
    @classmethod
    def _description_capped(cls, value: str, info: ValidationInfo) -> str:
        # A new spec's only (SUBMISSION): nothing but people read the description.
        if at_submission(info) and len(value) > MAX_DESCRIPTION_CHARS:
            raise PydanticCustomError(
                "invalid_spec",
                "{reason}",
                {
                    "reason": f"description must be at most {MAX_DESCRIPTION_CHARS} characters, "
                    f"not {len(value)}: shorten it (put long notes elsewhere, link them here)"
                },
            )
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model_name_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("activations", mode="before")
    @classmethod
    def _lowercase_families(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k).lower(): ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("baselines", mode="before")
    @classmethod
    def _lowercase_baselines(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v.lower() if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> StudySpec:
        errors = Errors("StudySpec")
        submission = at_submission(info)
        if submission:  # what the user meant; stored specs ran without these (SUBMISSION)
            checks.check_unused(errors, "sampler", self.sampler, SAMPLER_FIELDS)
            checks.check_unused(errors, "pruner", self.pruner, PRUNER_FIELDS)
            checks.check_dataset_path(errors, self.dataset)
            checks.check_pruner(errors, self.pruner)
        checks.check_objectives(errors, list(self.objectives), self.sampler.name, self.pruner)
        checks.check_section(errors, ("model",), self.model, MODEL_DOMAINS)
        checks.check_section(errors, ("training",), self.training, TRAINING_DOMAINS)
        checks.check_section(
            errors, ("training", "augment"), self.training.augment, AUGMENT_DOMAINS
        )
        checks.check_ema_start(errors, self.training)
        checks.check_dataset(errors, self.dataset)
        for i, name in enumerate(self.baselines):
            try:
                get_family(name)
            except ValueError as exc:
                errors.add(("baselines", i), str(exc))
                continue
            if name in self.baselines[:i]:  # added already (and enqueued once: skip_if_exists)
                if submission:
                    errors.add(
                        ("baselines", i),
                        f"{name} is listed twice; list each baseline once (each runs once)",
                    )
                continue
            if name not in self.activations:
                self.activations[name] = ActivationSpec()
        for key, entry in self.activations.items():
            checks.check_activation(errors, key, entry, self.model.name)
        if self.enqueue and not errors.items:
            checks.check_enqueue(errors, self.enqueue, self.search_space(), self.sampler.name)
        if self.sampler.name == "grid":
            continuous = [d.name for d in self.search_space() if is_continuous(d)]
            if continuous:
                errors.add(
                    ("sampler", "name"),
                    "the grid sampler needs discrete values: give a step or choices for "
                    + ", ".join(continuous),
                )
            elif submission and not errors.items and (size := grid_size(self)) > MAX_GRID_POINTS:
                errors.add(
                    ("sampler", "name"),
                    f"the grid has {size} configurations, more than {MAX_GRID_POINTS}: "
                    "give fewer values, or use another sampler",
                )
        errors.raise_if_any()
        return self

    def search_space(self) -> list[SearchDim]:
        """Every Optuna parameter this spec can suggest (conditional ones included), in order."""
        return list(search_dims(self.model, self.training, self.activations))

    @property
    def cost_objective(self) -> str | None:
        """The cost a multi-objective study minimises (step_time, params); None: accuracy only."""
        return self.objectives[1] if len(self.objectives) > 1 else None

    def directions(self) -> list[Literal["maximize", "minimize"]]:
        """Optuna's study directions, one per objective."""
        costs: list[Literal["maximize", "minimize"]] = ["minimize"] * (len(self.objectives) - 1)
        return ["maximize", *costs]

    def family_keys(self) -> list[str]:
        """Activation choices in spec order (family names or aliases)."""
        return list(self.activations)


def model_training_defaults(model: Any) -> dict[str, Any]:
    """The recipe values replacing a spec's generic training defaults; {} when there are none.

    `model` is the spec's model as written (a name or a mapping) or a ModelSpec; a searched
    model name has no recipe. Keys the spec does not take (augment.pad_mode) are left out.
    """
    name = model.get("name") if isinstance(model, Mapping) else getattr(model, "name", model)
    found = spec_recipe(name) if isinstance(name, str) else None
    return found or {}


def _given_training(training: Any) -> dict[str, Any] | None:
    """The training fields a spec gives, as a fresh mapping (None: not a section to fill)."""
    if isinstance(training, TrainingSpec):
        given = {k: getattr(training, k) for k in training.model_fields_set}
        augment = given.get("augment")
        if isinstance(augment, AugmentSpec):
            given["augment"] = {k: getattr(augment, k) for k in augment.model_fields_set}
        return given
    return dict(training) if isinstance(training, Mapping) else None


def spec_warnings(spec: StudySpec | Mapping[str, Any]) -> list[dict[str, str]]:
    """What a valid spec sets that its budget contradicts, as {"loc", "msg"} entries.

    Training that runs but not as written (a warm-up or lookahead as long as the training, a
    pruner that never prunes): the API returns these on submit and the CLI shows them; they
    refuse nothing. Settings that make training meaningless are errors instead (ema.start_epoch).
    """
    parsed = spec if isinstance(spec, StudySpec) else parse_spec(spec)
    training, model = parsed.training, parsed.model.name
    recipe = model_training_defaults(parsed.model)
    found = [
        *checks.warmup_warning(training, recipe, model),
        *checks.lookahead_warning(training, recipe, model),
        *checks.pruner_warning(training, parsed.pruner),
    ]
    return [{"loc": ".".join(loc), "msg": msg} for loc, msg in found]


# -- parsing --------------------------------------------------------------------------------
def _loc(parts: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in parts if not (isinstance(p, str) and p.startswith("@")))


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return _unknown_field(error["loc"])
    if error["type"] == "literal_error":  # sampler.name: tpee
        expected = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        return with_hint(msg, error.get("input"), expected)
    return msg.removeprefix("Value error, ")


def _unknown_field(loc: tuple[str | int, ...]) -> str:
    """ "unknown field", with the key it most likely misspells or else the keys taken there."""
    valid = keys_at(StudySpec, loc)
    hint = did_you_mean(loc[-1], valid)
    if hint:
        return f"unknown field; {hint}"
    return f"unknown field; fields here: {', '.join(valid)}" if valid else "unknown field"


def spec_errors(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as SpecError entries (union tags dropped from locations)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for error in exc.errors():
        item = (_loc(error["loc"]), _message(error))
        if item not in seen:
            seen.add(item)
            out.append({"loc": item[0], "msg": item[1]})
    return out


def parse_spec(
    source: str | bytes | Mapping[str, Any] | StudySpec, *, submission: bool = False
) -> StudySpec:
    """Validate a spec given as YAML/JSON text or a mapping; raises SpecError naming each field.

    `submission=True` for a new spec (the API's submit and clone): it must also pass the checks
    a stored spec is spared (SUBMISSION), such as no field its sampler, pruner or dataset
    ignores and no count past its cap. Stored specs are parsed without it.
    """
    if isinstance(source, StudySpec):
        source = source.model_dump(mode="json")
    if isinstance(source, (str, bytes)):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise SpecError([{"loc": "", "msg": f"not valid YAML/JSON: {exc}"}]) from exc
    else:
        data = source
    if not isinstance(data, Mapping):
        raise SpecError([{"loc": "", "msg": "the spec must be a mapping (YAML/JSON object)"}])
    if "activations" not in data:
        raise SpecError(
            [{"loc": "activations", "msg": f"required; families: {', '.join(family_names())}"}]
        )
    try:
        return StudySpec.model_validate(dict(data), context={SUBMISSION: submission})
    except ValidationError as exc:
        raise SpecError(spec_errors(exc)) from exc
