"""The campaign spec: ordered stages of studies, each promoting its best configurations. Torch-free.

A campaign document is a study spec (the *base*: data, activations, baselines, sampler, …) plus
`stages`, which tells it apart from a study spec (`is_campaign`). Each stage is one study per
model: the base with the stage's overrides (`model`, `training`, `seeds`, `timeouts`; the first
stage also `n_trials` and `sampler`). A stage's `promote` rule picks the configurations that go
on to the next stage (the last stage has none):

- the first stage searches as a study does (the base's budget, sampler and `enqueue`);
- every later stage runs exactly the configurations promoted into it (their Optuna params,
  enqueued), the baselines at their defaults first, with seeds no earlier stage used, the random
  sampler (it draws nothing: every trial is enqueued) and no pruner, so that its trainings took
  no part in choosing its configurations and its comparisons can say better or worse
  (docs/evidence.md). Its budget is the number of those configurations.

A stage's `training` fields replace the base's same fields (the rest stay; a model with a recipe
fills the fields neither gives); `timeouts` likewise; `sampler` replaces the base's sampler.

`parse_campaign` validates the document by building and validating every stage's study spec
with the study spec's own checks; an error is located where it was written: `stages.1.training.lr`
for a stage's field, `stages.2.model.1` for the second model of a transfer stage, the base's own
path (`activations.smu.alpha`) for a base field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from search_space.spec.checks import check_enqueue
from search_space.spec.limits import MAX_SEEDS, MAX_TRIALS
from search_space.spec.names import keys_at
from search_space.spec.study import StudySpec, parse_spec, spec_warnings
from search_space.spec.values import Errors, SpecError, schema_bounds, within
from search_space.spelling import did_you_mean

MAX_STAGES = 10
MAX_STAGE_MODELS = 10  # models of one transfer stage
MAX_PROMOTE_TOP = 20  # configurations per family (or overall) a stage promotes
MAX_STAGE_NAME = 60
MAX_MIN_DELTA = 100.0  # accuracy points
MAX_NAME = 200  # as_studies.name
# The study fields a stage overrides; the first stage only: n_trials and sampler.
STAGE_FIELDS = ("model", "training", "seeds", "n_trials", "sampler", "timeouts")
FIRST_STAGE_ONLY = ("n_trials", "sampler")


class PromoteSpec(BaseModel):
    """Which configurations of a stage go on to the next: the best by validation value."""

    model_config = ConfigDict(extra="forbid")

    top: Annotated[StrictInt, within("top", 1, MAX_PROMOTE_TOP)] = Field(
        description="configurations promoted: the best distinct complete ones by validation "
        "value (a configuration's best in the stage), per family or in all",
        json_schema_extra=schema_bounds(1, MAX_PROMOTE_TOP),
    )
    per: Literal["family", "overall"] = Field(
        default="family",
        description="family: the top configurations of each family; overall: of all families "
        "together (the baselines are carried along either way, never promoted)",
    )
    min_delta: StrictFloat | StrictInt | None = Field(
        default=None,
        description="accuracy points (pp): a family whose mean validation accuracy in this "
        "stage is less than this far above the baseline's (Δ of the stage's own trainings; "
        "the mean of its studies' Δ in a transfer stage) is dropped; null = keep every family",
    )

    @field_validator("min_delta")
    @classmethod
    def _min_delta_bounded(cls, value: float | None) -> float | None:
        if value is not None and not -MAX_MIN_DELTA <= value <= MAX_MIN_DELTA:
            raise PydanticCustomError(
                "invalid_spec",
                "{reason}",
                {"reason": f"min_delta is in accuracy points, between -100 and 100, not {value}"},
            )
        return value


ModelEntry = StrictStr | dict[str, Any]


class StageSpec(BaseModel):
    """One stage of a campaign: the base study spec with these fields replaced."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(
        default="",
        max_length=MAX_STAGE_NAME,
        description="shown in the funnel and the stage's study names; default: stage N",
    )
    model: ModelEntry | list[ModelEntry] | None = Field(
        default=None,
        description="the network, as a study's `model` (a name or {name, width}); a list runs "
        "the stage's configurations on each model, one study per model (transfer); null: "
        "the base's",
    )
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="training fields replacing the base's same fields (the others stay)",
    )
    seeds: Annotated[StrictInt, within("seeds", 1, MAX_SEEDS)] | None = Field(
        default=None,
        description="seeds per configuration (null: the base's)",
        json_schema_extra=schema_bounds(1, MAX_SEEDS),
    )
    n_trials: Annotated[StrictInt, within("n_trials", 1, MAX_TRIALS)] | None = Field(
        default=None,
        description="first stage only: its budget of trials (null: the base's); a later stage "
        "runs exactly the configurations promoted into it",
        json_schema_extra=schema_bounds(1, MAX_TRIALS),
    )
    sampler: dict[str, Any] | None = Field(
        default=None,
        description="first stage only: its sampler, replacing the base's (later stages enqueue "
        "every trial: random sampler)",
    )
    timeouts: dict[str, Any] | None = Field(
        default=None, description="time limits replacing the base's same fields"
    )
    promote: PromoteSpec | None = Field(
        default=None,
        description="how this stage's best configurations go on to the next; required on every "
        "stage but the last, refused on the last",
    )

    def models(self, base: Mapping[str, Any]) -> list[Any]:
        """The stage's model entries: its own (one or a list), else the base's (None: default)."""
        if self.model is None:
            return [base.get("model")]
        return list(self.model) if isinstance(self.model, list) else [self.model]


def model_name(entry: Any) -> str | None:
    """A model entry's name (a name, or a mapping's `name`); None when it does not say."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
        return str(entry["name"])
    return None


@dataclass(frozen=True)
class CampaignSpec:
    """A validated campaign: the base study fields as written, and its stages."""

    base: dict[str, Any]  # every field of the document but `stages`, as written
    stages: tuple[StageSpec, ...]
    first: StudySpec  # the first stage's (first model's) study spec, parsed

    @property
    def name(self) -> str:
        """The campaign's name (the base's)."""
        return str(self.base.get("name") or "")

    @property
    def description(self) -> str:
        """The campaign's description (the base's)."""
        return str(self.base.get("description") or "")

    @property
    def version(self) -> int:
        """The spec format's version."""
        return self.first.version

    @property
    def baselines(self) -> list[str]:
        """The baseline families, carried into every stage at their defaults."""
        return list(self.first.baselines)

    @property
    def stage_count(self) -> int:
        """How many stages the campaign has."""
        return len(self.stages)

    def document(self) -> dict[str, Any]:
        """The campaign as stored: the base as written plus each stage's given fields."""
        stages = [stage.model_dump(mode="json", exclude_defaults=True) for stage in self.stages]
        return {**self.base, "stages": stages}

    def label(self, index: int) -> str:
        """A stage's name, or "stage N" (1-based)."""
        return self.stages[index].name or f"stage {index + 1}"

    def models(self, index: int) -> list[Any]:
        """The model entries of a stage: one study each."""
        return self.stages[index].models(self.base)

    def study_spec(
        self,
        index: int,
        model: Any,
        *,
        enqueue: Sequence[Mapping[str, Any]] = (),
        seed: int | None = None,
        campaign_id: int | None = None,
    ) -> dict[str, Any]:
        """The study spec (unvalidated) of stage `index` on `model`.

        A later stage's `enqueue` (the promoted configurations) and `seed` (one no earlier stage
        used) come from the campaign's store; without them the spec is a placeholder that
        validates the stage at submission.
        """
        stage = self.stages[index]
        spec = {key: value for key, value in self.base.items()}
        spec["name"] = self._study_name(index, model)
        where = f"campaign {campaign_id}" if campaign_id is not None else "a campaign"
        spec["description"] = (
            f"Stage {index + 1} of {len(self.stages)} ({self.label(index)}) of {where}: {self.name}"
        )
        if stage.model is not None:
            spec["model"] = model
        if stage.training:
            spec["training"] = {**_mapping_or_empty(self.base.get("training")), **stage.training}
        if stage.timeouts is not None:
            spec["timeouts"] = {**_mapping_or_empty(self.base.get("timeouts")), **stage.timeouts}
        if stage.seeds is not None:
            spec["seeds"] = stage.seeds
        if index == 0:
            if stage.n_trials is not None:
                spec["n_trials"] = stage.n_trials
            if stage.sampler is not None:
                spec["sampler"] = stage.sampler
            return spec
        configurations = [dict(params) for params in enqueue]
        spec.update(
            enqueue=configurations,
            n_trials=max(len(configurations) + len(_listed(self.base.get("baselines"))), 1),
            sampler={"name": "random"},
            pruner={"name": "none"},
            repeats="reseed",
        )
        if seed is not None:
            spec["seed"] = seed
        return spec

    def carry(
        self, index: int, configurations: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Promoted configurations as stage `index` enqueues them, in order, each once.

        Each keeps the parameters every study of the stage searches, with values their
        distributions can give: the family and its own values always (the activations are the
        base's in every stage); a model or training value the stage fixes, or searches over
        another range, is the stage's (fixed, or its sampler's).
        """
        dims = None
        for model in self.models(index):
            found = parse_spec(self.study_spec(index, model)).search_space()
            names = {dim.name: dim for dim in found}
            dims = names if dims is None else {k: v for k, v in dims.items() if k in names}
        carried: list[dict[str, Any]] = []
        for params in configurations:
            kept = {k: v for k, v in params.items() if k in (dims or {})}
            errors = Errors("enqueue")
            check_enqueue(errors, [kept], list((dims or {}).values()), "random")
            for loc, _ in errors.items:
                kept.pop(str(loc[-1]), None)
            if kept not in carried:
                carried.append(kept)
        return carried

    def _study_name(self, index: int, model: Any) -> str:
        parts = [self.label(index)]
        if len(self.models(index)) > 1:
            parts.append(model_name(model) or "model")
        tail = " · " + " · ".join(parts)
        stem = self.name if len(self.name) + len(tail) <= MAX_NAME else self.name[:150] + "…"
        return (stem + tail)[:MAX_NAME]


def _mapping_or_empty(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def is_campaign(document: Any) -> bool:
    """Whether a submitted document is a campaign (it has `stages`) rather than a study spec."""
    return isinstance(document, Mapping) and "stages" in document


# -- parsing --------------------------------------------------------------------------------
_STAGES: TypeAdapter[list[StageSpec]] = TypeAdapter(list[StageSpec])


def _load(source: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, (str, bytes)):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise SpecError([{"loc": "", "msg": f"not valid YAML/JSON: {exc}"}]) from exc
    else:
        data = source
    if not isinstance(data, Mapping):
        raise SpecError([{"loc": "", "msg": "the campaign must be a mapping (YAML/JSON object)"}])
    return dict(data)


def _stage_errors(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic's errors of the stages list, located under `stages`."""
    out = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        msg = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and len(loc) >= 2:
            valid = keys_at(StageSpec, loc[1:])
            hint = did_you_mean(loc[-1], valid)
            msg = (
                f"unknown field; {hint}"
                if hint
                else f"unknown field; fields here: {', '.join(valid)}"
            )
        out.append({"loc": ".".join(["stages", *(str(p) for p in loc)]), "msg": msg})
    return out


def _parse_stages(raw: Any) -> list[StageSpec]:
    if not isinstance(raw, list) or not raw:
        raise SpecError([{"loc": "stages", "msg": "a list of at least one stage ({model, …})"}])
    if len(raw) > MAX_STAGES:
        raise SpecError([{"loc": "stages", "msg": f"at most {MAX_STAGES} stages, not {len(raw)}"}])
    try:
        return _STAGES.validate_python(raw)
    except ValidationError as exc:
        raise SpecError(_stage_errors(exc)) from exc


def _rule_errors(stages: list[StageSpec]) -> list[dict[str, str]]:
    """Promotion on every stage but the last; first-stage-only fields; distinct models."""
    errors = []
    last = len(stages) - 1
    for i, stage in enumerate(stages):
        if i < last and stage.promote is None:
            errors.append({"loc": f"stages.{i}.promote", "msg": (
                f"required: which configurations go on to stage {i + 2} "
                "(e.g. {top: 3, per: family})"
            )})  # fmt: skip
        if i == last and stage.promote is not None:
            errors.append({"loc": f"stages.{i}.promote", "msg": (
                "the last stage promotes nothing: leave promote out"
            )})  # fmt: skip
        for field in FIRST_STAGE_ONLY if i else ():
            if getattr(stage, field) is not None:
                errors.append({"loc": f"stages.{i}.{field}", "msg": (
                    f"only the first stage takes {field}: stage {i + 1} runs exactly the "
                    "configurations promoted into it (their number is its budget, every trial "
                    "enqueued); leave it out, or search more in the first stage"
                )})  # fmt: skip
        if isinstance(stage.model, list):
            errors += _model_list_errors(i, stage.model)
    return errors


def _model_list_errors(index: int, models: list[Any]) -> list[dict[str, str]]:
    loc = f"stages.{index}.model"
    if not models:
        return [{"loc": loc, "msg": "an empty list: give one model or several"}]
    if len(models) > MAX_STAGE_MODELS:
        return [{"loc": loc, "msg": f"at most {MAX_STAGE_MODELS} models, not {len(models)}"}]
    seen: list[Any] = []
    errors = []
    for j, entry in enumerate(models):
        if entry in seen:
            errors.append({"loc": f"{loc}.{j}", "msg": "listed twice; list each model once"})
        seen.append(entry)
    return errors


def _located(
    error: dict[str, str], campaign: CampaignSpec, index: int, j: int
) -> tuple[dict[str, str], bool]:
    """A stage study spec's error, located where the campaign document wrote the field, and
    whether that is a field of the base (not of the stage)."""
    stage = campaign.stages[index]
    loc, msg = error["loc"], error["msg"]
    head, _, rest = loc.partition(".")
    given = head in STAGE_FIELDS and getattr(stage, head) not in (None, {})
    if given and head == "model" and isinstance(stage.model, list):
        return {
            "loc": f"stages.{index}.model.{j}" + (f".{rest}" if rest else ""),
            "msg": msg,
        }, False
    if given:
        return {"loc": f"stages.{index}.{loc}", "msg": msg}, False
    if index == 0:
        return error, True
    where = f"stage {index + 1}"
    if len(campaign.models(index)) > 1:
        where += f", model {model_name(campaign.models(index)[j]) or j + 1}"
    return {"loc": loc, "msg": f"{msg} (in {where})"}, True


def parse_campaign(
    source: str | bytes | Mapping[str, Any], *, submission: bool = False
) -> CampaignSpec:
    """Validate a campaign given as YAML/JSON text or a mapping; SpecError naming each field.

    Every stage's study spec (each model of a transfer stage) is built and validated as a new
    study's would be (`submission`); a later stage's with a placeholder for the configurations
    promoted into it.
    """
    data = _load(source)
    if "stages" not in data:
        raise SpecError([{"loc": "stages", "msg": (
            "required: a campaign lists its stages (a study spec, without stages, is "
            "submitted as a study: POST /api/v1/studies)"
        )}])  # fmt: skip
    base = {key: value for key, value in data.items() if key != "stages"}
    stages = _parse_stages(data["stages"])
    errors = _rule_errors(stages)
    if errors:
        raise SpecError(errors)
    draft = CampaignSpec(base=base, stages=tuple(stages), first=_placeholder())
    first: StudySpec | None = None
    found: list[dict[str, str]] = []
    in_base: set[tuple[str, str]] = set()  # the first stage's errors of base fields
    for index in range(len(stages)):
        for j, model in enumerate(draft.models(index)):
            try:
                parsed = parse_spec(draft.study_spec(index, model), submission=submission)
            except SpecError as exc:
                for error in exc.errors:
                    located, of_base = _located(error, draft, index, j)
                    if of_base and index == 0:
                        in_base.add((error["loc"], error["msg"]))
                    elif of_base and (error["loc"], error["msg"]) in in_base:
                        continue  # the base's error again: said once
                    found.append(located)
                continue
            first = first or parsed
    unique = [dict(pair) for pair in dict.fromkeys(tuple(e.items()) for e in found)]
    if unique or first is None:
        raise SpecError(unique or [{"loc": "", "msg": "no stage could be built"}])
    return CampaignSpec(base=base, stages=tuple(stages), first=first)


def _placeholder() -> StudySpec:
    """A stand-in first spec while the stages are being validated (never read)."""
    return StudySpec.model_construct()


def campaign_warnings(campaign: CampaignSpec) -> list[dict[str, str]]:
    """What each stage's study spec sets that its budget contradicts (spec_warnings), located
    as parse_campaign locates errors; the first stage's base warnings are not repeated."""
    found: list[dict[str, str]] = []
    in_base: set[tuple[str, str]] = set()
    for index in range(campaign.stage_count):
        for j, model in enumerate(campaign.models(index)):
            for warning in spec_warnings(parse_spec(campaign.study_spec(index, model))):
                located, of_base = _located(warning, campaign, index, j)
                key = (warning["loc"], warning["msg"])
                if of_base and index == 0:
                    in_base.add(key)
                elif of_base and key in in_base:
                    continue
                if located not in found:
                    found.append(located)
    return found
