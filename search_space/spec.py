"""The study spec: what a user submits (YAML or JSON), validated and versioned. Torch-free.

Every searchable field takes a fixed value or a distribution:
  - a scalar: fixed;
  - {low, high, log?, step?}: a float range (an int range for integer fields; bounds must be
    integers there);
  - {choices: [...]}: categorical.
Activation entries are flat: `smu: {alpha: {low: 0, high: 0.5}, mu: 1.0, scope: per_layer,
trainable: {mu: true}}` — keys are the family's parameters and options (registry) plus scope,
trainable, preset, init_target, init_interval and clamp.

`training.ema`, `training.tta`, `training.lookahead` and `training.betas` take one fixed value
for the whole study, never a distribution (see TrainingSpec).

Model recipes: a spec whose model is fixed to one with a recipe of its own (search_space.recipes:
the proxy) takes the recipe's value for every training field it leaves out, `augment` key by key;
fields it gives win. The parsed spec states those values, so a stored spec shows what trials use.

Budget: `n_trials` trials (1..MAX_TRIALS), baselines included. The grid sampler runs each
configuration of the spec once and then the study is complete, so its budget is
min(n_trials, grid size); its baselines are configurations of the grid (see SamplerSpec).

Errors: `SpecError(errors=[{"loc": "activations.smu.alpha", "msg": ...}, ...])`, a ValueError.
`StudySpec.model_validate` raises pydantic's ValidationError with the same locations, so the API
can also use the model directly as a request body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs it, not typing's, before Python 3.12

from search_space.recipes import spec_recipe
from search_space.registry import (
    FIT_TARGETS,
    Domain,
    Family,
    family_names,
    get_alias,
    get_family,
)

SPEC_VERSION = 1
MODEL_NAMES: tuple[str, ...] = (
    "resnet18",
    "preact_resnet18",
    "preact_resnet34",
    "mobilenet_v2",
    "shufflenet_v2",
    "efficientnet_b0",
    "lenet",
    "vgg11",
    "vgg16",
    "proxy",
)
# Models whose classifier has hidden MLP layers: the only places Maxout (head-only) can go.
MLP_HEAD_MODELS: tuple[str, ...] = ("lenet", "vgg11", "vgg16")
DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar100", "folder")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
SCHEDULES: tuple[str, ...] = ("onecycle", "cosine", "linear", "constant")
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
TTA_MODES: tuple[str, ...] = ("none", "flip", "flip_translate")  # workers.train.TTA_MODES
# training.ema's defaults, filled into the resolved config: workers.train.EmaConfig's (a test
# keeps the two equal; this module cannot import the torch side).
EMA_DEFAULTS: dict[str, Any] = {"decay": 0.999, "start_epoch": 1, "every": 1}
# training.lookahead's and training.betas's: workers.train.LookaheadConfig's and
# TrainingConfig.betas (the same test keeps them equal).
LOOKAHEAD_DEFAULTS: dict[str, Any] = {"start_epoch": 3, "every": 5, "decay": 0.95, "power": 3.0}
BETAS_DEFAULT: tuple[float, float] = (0.9, 0.999)
SAMPLER_NAMES: tuple[str, ...] = ("tpe", "random", "cmaes", "qmc", "grid")
PRUNER_NAMES: tuple[str, ...] = ("median", "percentile", "hyperband", "successive_halving", "none")
# The fields each sampler and pruner reads (search_space.suggest.make_sampler / make_pruner),
# besides `name` and the sampler's `seed`, which all read. A new spec that sets one the chosen
# sampler or pruner does not read to anything but its default is refused (SUBMISSION below).
SAMPLER_FIELDS: dict[str, tuple[str, ...]] = {
    "tpe": ("constant_liar", "multivariate", "group", "n_startup_trials"),
    "random": (),
    "cmaes": ("n_startup_trials",),
    "qmc": ("qmc_type",),
    "grid": (),
}
PRUNER_FIELDS: dict[str, tuple[str, ...]] = {
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
    "percentile": ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
    "successive_halving": ("min_resource", "reduction_factor", "min_early_stopping_rate"),
    "none": (),
}
# The validation context key of a new submission (parse_spec(..., submission=True)): checks that
# only a new spec must pass. Stored specs are re-parsed by every worker at every claim, and one
# that was valid when submitted must not start failing when a check is added. So a check added
# since specs were stored runs on every parse only if it protects what a worker needs (a value
# it cannot run, a bound Optuna or the database relies on). One that refuses what the code ran
# harmlessly or ignored runs only for new specs: a field the sampler, pruner or dataset does not
# read, a baseline listed twice, a blank name, hyperband's max_resource below min_resource, a
# grid of more than MAX_GRID_POINTS configurations, a count past its cap, a description longer
# than MAX_DESCRIPTION_CHARS.
SUBMISSION = "submission"
# Bounds of the spec's counts and seeds. Our integer columns are 32-bit (service/db/models.py:
# as_studies.priority, n_trials), Optuna's and numpy's seeds 32-bit unsigned, torch's 64-bit:
# a value outside these is refused at submission, naming the field and the range. The upper
# bounds of timeouts, n_startup_trials and the pruner's counts are caps (cap=True below): a larger
# value ran harmlessly before them (a limit never reached, a step never taken), so only a new
# spec is held to them.
INT32_MAX = 2**31 - 1
MAX_TRIALS = 100_000  # n_trials: a study's budget of trials
PRIORITY_RANGE = (-(2**31), INT32_MAX)  # as_studies.priority; higher runs first
MAX_SEEDS = 100  # seeds per configuration: each trial trains this many times
MAX_EPOCHS = 10_000  # training.epochs; also the pruner's step counts (its steps are epochs)
SEED_RANGE = (0, INT32_MAX)  # seed, sampler.seed, dataset.split_seed
MAX_GRID_POINTS = 1_000_000  # distinct configurations of a grid study
# dataset.val_size and train_subset: a worker holds the whole dataset in memory as 32×32 uint8
# images (3 KiB each), so 10 million images (30 GiB) is past any machine it runs on.
MAX_IMAGES = 10_000_000
CIFAR_TRAIN_IMAGES = 50_000  # CIFAR-10's and CIFAR-100's training sets, split into train and val
MAX_TRIAL_S = 30 * 86_400  # timeouts.trial_s: 30 days
MAX_STUDY_S = 366 * 86_400  # timeouts.study_s: a year
# description: free text, shown with the study and sent in every item of a study list. A cap
# (new specs only): a longer one was stored and shown harmlessly.
MAX_DESCRIPTION_CHARS = 10_000
# Activation entry keys that are not family parameters or options.
ENTRY_KEYS: tuple[str, ...] = (
    "scope",
    "trainable",
    "preset",
    "init_target",
    "init_interval",
    "clamp",
)


class SpecError(ValueError):
    """An invalid study spec; `errors` lists {"loc": dotted path, "msg": reason} entries."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e['loc'] or '(spec)'}: {e['msg']}" for e in errors)
        super().__init__(f"invalid study spec: {summary}")


def _at_submission(info: ValidationInfo) -> bool:
    """Whether a validator runs for a new spec (SUBMISSION) rather than a stored one."""
    return bool(info.context and info.context.get(SUBMISSION))


def _over(value: int, high: int, cap: bool, info: ValidationInfo) -> bool:
    """Whether value is above high where that counts: always, or for a cap at submission only."""
    return value > high and (not cap or _at_submission(info))


def _within(name: str, low: int, high: int, *, cap: bool = False) -> AfterValidator:
    """A validator refusing integers outside [low, high] with a message naming field and range.

    `cap`: `high` bounds only a new spec (SUBMISSION): a stored one from before the cap ran with a
    larger value harmlessly.
    """

    def check(value: int, info: ValidationInfo) -> int:
        if value < low or _over(value, high, cap, info):
            raise PydanticCustomError(
                "invalid_spec",
                "{reason}",
                {"reason": f"{name} must be between {low} and {high}, not {value}"},
            )
        return value

    return AfterValidator(check)


def _bounds(low: int, high: int) -> dict[str, Any]:
    """The JSON-schema entry of a bounded integer (the validator above does the checking)."""
    return {"minimum": low, "maximum": high}


def _used_by(table: Mapping[str, tuple[str, ...]], field: str) -> str:
    """The samplers or pruners that read a field, for its description: "tpe, cmaes"."""
    return ", ".join(name for name, fields in table.items() if field in fields)


def _int_or_auto(name: str, low: int, high: int, *, cap: bool = False) -> BeforeValidator:
    """A validator for an integer in [low, high] or the string "auto" (pruner resources).

    One check rather than a union, so that an error is located at the field itself (a union
    would add its branch to the location) and `"3"` or `3.0` are refused, not converted.
    `cap` as for _within.
    """

    def check(value: Any, info: ValidationInfo) -> Any:
        if value == "auto" and isinstance(value, str):
            return value
        number = isinstance(value, int) and not isinstance(value, bool)
        if number and low <= value and not _over(value, high, cap, info):
            return value
        reason = f"{name} must be auto or an integer between {low} and {high}, not {value!r}"
        raise PydanticCustomError("invalid_spec", "{reason}", {"reason": reason})

    return BeforeValidator(check)


def _exact_int(name: str) -> BeforeValidator:
    """A validator refusing anything but an int (a Literal[1] field would take true or 1.0)."""

    def check(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise PydanticCustomError(
            "invalid_spec", "{reason}", {"reason": f"{name} must be an integer, not {value!r}"}
        )

    return BeforeValidator(check)


# -- distributions --------------------------------------------------------------------------
def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError(
            "invalid_spec", "{reason}", {"reason": f"must be a number, not {value!r}"}
        )
    return value


Number = Annotated[int | float, BeforeValidator(_number)]
_FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class Range(BaseModel):
    """A numeric search range; integer-typed parameters need integer bounds."""

    model_config = ConfigDict(extra="forbid")

    low: Number
    high: Number
    log: StrictBool = False
    step: Number | None = None


class Choices(BaseModel):
    """A categorical search over the listed values."""

    model_config = ConfigDict(extra="forbid")

    choices: list[bool | int | float | str] = Field(min_length=1)


def _kind_of(value: Any) -> str:
    if isinstance(value, Choices) or (isinstance(value, Mapping) and "choices" in value):
        return "@choices"
    if isinstance(value, (Range, Mapping)):
        return "@range"
    return "@fixed"


def _searchable(fixed: Any) -> Any:
    # Strict: `lr: true`, `epochs: "64"` or `epochs: 10.5` are mistakes to report, not to coerce
    # (an int is still a valid float).
    return Annotated[
        Annotated[fixed, Tag("@fixed")]
        | Annotated[Range, Tag("@range")]
        | Annotated[Choices, Tag("@choices")],
        Discriminator(_kind_of),
    ]


SearchFloat = _searchable(StrictFloat)
SearchInt = _searchable(StrictInt)
SearchBool = _searchable(StrictBool)
SearchStr = _searchable(StrictStr)
SearchAny = _searchable(StrictBool | StrictInt | StrictFloat | StrictStr)
_ANY_VALUE: TypeAdapter[Any] = TypeAdapter(SearchAny)


@dataclass(frozen=True)
class SearchDim:
    """One Optuna parameter a spec searches: its name, distribution and value kind."""

    name: str
    dist: Range | Choices
    kind: Literal["int", "float", "categorical"]


def is_searched(value: Any) -> bool:
    """True when a spec value is a distribution rather than a fixed value."""
    return isinstance(value, (Range, Choices))


# -- error plumbing -------------------------------------------------------------------------
class _Errors:
    """Collects (loc, msg) pairs while validating, then raises them as one ValidationError."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.items: list[tuple[tuple[str | int, ...], str]] = []

    def add(self, loc: tuple[str | int, ...], msg: str) -> None:
        self.items.append((loc, msg))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        details = [
            InitErrorDetails(
                type=PydanticCustomError("invalid_spec", "{reason}", {"reason": msg}),
                loc=loc,
                input=None,
            )
            for loc, msg in self.items
        ]
        raise ValidationError.from_exception_data(self.title, details)


def check_value(value: Any, domain: Domain) -> list[str]:
    """Why a fixed value or distribution does not fit a domain (empty when it does)."""
    if isinstance(value, Choices):
        problems = [f"choice {c!r}: {why}" for c in value.choices if (why := domain.check(c))]
        if len({json.dumps(c) for c in value.choices}) != len(value.choices):
            problems.append("choices must be distinct")
        return problems
    if isinstance(value, Range):
        return _range_problems(value, domain)
    why = domain.check(value)
    return [why] if why else []


def _range_problems(r: Range, domain: Domain) -> list[str]:
    if domain.kind not in ("int", "float"):
        return [f"a {domain.kind} parameter takes a value or {{choices: [...]}}, not a range"]
    problems = []
    if domain.kind == "int" and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in (r.low, r.high)
    ):
        problems.append("an integer parameter needs integer low and high")
    if domain.kind == "int" and r.step is not None and not isinstance(r.step, int):
        problems.append("an integer parameter needs an integer step")
    if not r.low < r.high:
        problems.append(f"empty range: low ({r.low}) must be < high ({r.high})")
    if r.log and r.low <= 0:
        problems.append("a log range needs low > 0")
    if r.step is not None and r.step <= 0:
        problems.append("step must be > 0")
    if r.log and r.step is not None and not (domain.kind == "int" and r.step == 1):
        problems.append("log and step cannot be combined")
    for bound in (r.low, r.high):
        if math.isfinite(bound) and not domain.contains(float(bound)):
            problems.append(f"{bound!r} is outside the domain {domain}")
        elif not math.isfinite(bound):
            problems.append("bounds must be finite")
    return problems


def _dim_kind(domain: Domain, value: Range | Choices) -> Literal["int", "float", "categorical"]:
    if isinstance(value, Choices):
        return "categorical"
    return "int" if domain.kind == "int" else "float"


# -- sections -------------------------------------------------------------------------------
class DatasetSpec(BaseModel):
    """Which data to train on; the validation split is taken from the training set."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["cifar10", "cifar100", "folder"] = Field(
        default="cifar10",
        description="cifar10 or cifar100 (torchvision format), or folder: an image folder or "
        "tarball at path",
    )
    path: StrictStr | None = Field(
        default=None,
        description="name: folder only: its image folder or tarball (CIFAR is where the "
        "worker's --data points)",
    )
    val_size: Annotated[StrictInt, _within("dataset.val_size", 1, MAX_IMAGES)] = Field(
        default=5000,
        description=f"images held out of train (CIFAR: below {CIFAR_TRAIN_IMAGES}, its training "
        "set)",
        json_schema_extra=_bounds(1, MAX_IMAGES),
    )
    train_subset: Annotated[StrictInt, _within("dataset.train_subset", 1, MAX_IMAGES)] | None = (
        Field(
            default=None,
            description="train on only this many of the images left after val_size (CIFAR: at "
            f"most {CIFAR_TRAIN_IMAGES} − val_size); null = all",
            json_schema_extra=_bounds(1, MAX_IMAGES),
        )
    )
    split_seed: Annotated[StrictInt, _within("dataset.split_seed", *SEED_RANGE)] = Field(
        default=0,
        description="seed of the stratified validation split and of the train subset",
        json_schema_extra=_bounds(*SEED_RANGE),
    )

    @model_validator(mode="after")
    def _folder_needs_path(self) -> DatasetSpec:
        if self.name == "folder" and not (self.path or "").strip():
            raise PydanticCustomError(
                "invalid_spec", "{reason}", {"reason": "dataset 'folder' needs a path"}
            )
        return self


class ModelSpec(BaseModel):
    """Network architecture (name from MODEL_NAMES) and width multiplier."""

    model_config = ConfigDict(extra="forbid")

    name: SearchStr = Field(  # type: ignore[valid-type]
        default="resnet18", description="network architecture"
    )
    width: SearchFloat = Field(  # type: ignore[valid-type]
        default=1.0, description="channel width multiplier"
    )


class AugmentSpec(BaseModel):
    """On-GPU augmentation."""

    model_config = ConfigDict(extra="forbid")

    crop_padding: SearchInt = Field(  # type: ignore[valid-type]
        default=4, description="pixels padded on each side before a random 32×32 crop; 0 = none"
    )
    flip: SearchBool = Field(  # type: ignore[valid-type]
        default=True, description="random horizontal flip, probability 1/2"
    )


def _is_distribution(value: Any) -> bool:
    """Whether a raw spec value is written as a distribution ({low, high, ...} or {choices})."""
    if isinstance(value, (Range, Choices)):
        return True
    return isinstance(value, Mapping) and (
        "choices" in value or {"low", "high"} <= set(value) or "log" in value or "step" in value
    )


def _fixed_value(path: str, domain: Domain, why_fixed: str = "") -> BeforeValidator:
    """A validator for a field that takes one value (never searched), checked against domain.

    Runs before pydantic's type coercion, so a bool is not taken for a number nor "3" for an
    integer, as workers.train would not take them either.
    """

    def check(value: Any) -> Any:
        if _is_distribution(value):
            raise PydanticCustomError(
                "invalid_spec",
                "{reason}",
                {
                    "reason": f"{path} cannot be searched: give one value in {domain}, not a "
                    f"distribution{why_fixed}"
                },
            )
        if (why := domain.check(value)) is not None:
            raise PydanticCustomError("invalid_spec", "{reason}", {"reason": why})
        return value

    return BeforeValidator(check)


def _ema_mapping(value: Any) -> Any:
    """training.ema is null or one mapping, never a distribution."""
    if value is None or (isinstance(value, Mapping) and not _is_distribution(value)):
        return value
    searched = "cannot be searched" if _is_distribution(value) else f"cannot be {value!r}"
    raise PydanticCustomError(
        "invalid_spec",
        "{reason}",
        {
            "reason": f"training.ema {searched}: give one mapping {{decay, start_epoch, every}} "
            "(missing keys take their defaults), or null for no averaging"
        },
    )


def _ema_defaults(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # Filled in here so that the resolved trial config states the average that was evaluated.
    return None if value is None else {**EMA_DEFAULTS, **value}


class EmaSpec(TypedDict, total=False):
    """training.ema: an average of the weights, evaluated instead of the net (workers.train).

    A plain mapping rather than a model so that it reaches the resolved trial config as JSON.
    """

    # The attribute rather than pydantic.with_config, which needs pydantic >= 2.7.
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    decay: Annotated[
        float,
        _fixed_value("training.ema.decay", Domain("float", low=0.0, high=1.0, high_open=True)),
        Field(
            description="per-step decay, default 0.999 (0 = the net's own weights)",
            json_schema_extra={"minimum": 0, "exclusiveMaximum": 1},
        ),
    ]
    start_epoch: Annotated[
        int,
        _fixed_value("training.ema.start_epoch", Domain("int", low=0)),
        Field(
            description="first epoch (0-based) that averages, below epochs; default 1",
            json_schema_extra={"minimum": 0},
        ),
    ]
    every: Annotated[
        int,
        _fixed_value("training.ema.every", Domain("int", low=1)),
        Field(
            description="training steps between updates, default 1",
            json_schema_extra={"minimum": 1},
        ),
    ]


# null, or the mapping with its defaults filled in.
EmaField = Annotated[EmaSpec | None, BeforeValidator(_ema_mapping), AfterValidator(_ema_defaults)]


def _lookahead_mapping(value: Any) -> Any:
    """training.lookahead is null or one non-empty mapping, never a distribution.

    `{}` is refused: the trainer reads an empty lookahead mapping as off, whereas an empty
    `ema` mapping in a spec means its defaults; either reading would surprise someone.
    """
    if value is None or (isinstance(value, Mapping) and value and not _is_distribution(value)):
        return value
    if _is_distribution(value):
        problem = "cannot be searched"
    elif isinstance(value, Mapping):
        problem = "cannot be {} (the trainer would read it as off)"
    else:
        problem = f"cannot be {value!r}"
    raise PydanticCustomError(
        "invalid_spec",
        "{reason}",
        {
            "reason": f"training.lookahead {problem}: give one mapping with some of "
            "{start_epoch, every, decay, power} (missing keys take their defaults), or null "
            "for no lookahead"
        },
    )


def _lookahead_defaults(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # Filled in here so that the resolved trial config states the average that was trained with.
    return None if value is None else {**LOOKAHEAD_DEFAULTS, **value}


class LookaheadSpec(TypedDict, total=False):
    """training.lookahead: airbench's weight average, copied back into the net (training changes).

    workers.train.LookaheadConfig; a plain mapping, like EmaSpec, for the resolved trial config.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    start_epoch: Annotated[
        int,
        _fixed_value("training.lookahead.start_epoch", Domain("int", low=0)),
        Field(
            description="first epoch (0-based) that averages; default 3 (none at or after epochs)",
            json_schema_extra={"minimum": 0},
        ),
    ]
    every: Annotated[
        int,
        _fixed_value("training.lookahead.every", Domain("int", low=1)),
        Field(
            description="training steps between updates, default 5",
            json_schema_extra={"minimum": 1},
        ),
    ]
    decay: Annotated[
        float,
        _fixed_value(
            "training.lookahead.decay", Domain("float", low=0.0, high=1.0, high_open=True)
        ),
        Field(
            description="per-step decay, raised to `every`; default 0.95",
            json_schema_extra={"minimum": 0, "exclusiveMaximum": 1},
        ),
    ]
    power: Annotated[
        float,
        _fixed_value("training.lookahead.power", Domain("float", low=0.0)),
        Field(
            description="the decay ramps in as (step / total_steps) ** power; default 3",
            json_schema_extra={"minimum": 0},
        ),
    ]


# null, or the mapping with its defaults filled in.
LookaheadField = Annotated[
    LookaheadSpec | None,
    BeforeValidator(_lookahead_mapping),
    AfterValidator(_lookahead_defaults),
]
_BETA = Domain("float", low=0.0, high=1.0, high_open=True)
# The bounds again, for the JSON schema (_betas_pair does the checking, naming the field).
_Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


def _betas_pair(value: Any) -> Any:
    """training.betas is one pair of numbers in [0, 1), never a distribution."""
    if _is_distribution(value):
        problem = "cannot be searched"
    elif not isinstance(value, (list, tuple)) or len(value) != 2:
        problem = f"cannot be {value!r}"
    else:
        bad = [f"beta{i + 1} = {b!r}" for i, b in enumerate(value) if _BETA.check(b) is not None]
        if not bad:
            return value
        problem = f"has {' and '.join(bad)}"
    raise PydanticCustomError(
        "invalid_spec",
        "{reason}",
        {
            "reason": f"training.betas {problem}: give one pair [beta1, beta2] of numbers in "
            "[0, 1) (AdamW's; default [0.9, 0.999])"
        },
    )


class TrainingSpec(BaseModel):
    """Training hyperparameters; each is a fixed value or a distribution, except ema, tta,
    lookahead and betas.

    `ema` and `tta` decide what the accuracies measure (averaged or raw weights; each image or
    each image and its mirror), so they take one value for the whole study; `lookahead` and
    `betas` are nested values with no Optuna distribution. docs/workers.md describes them all.
    The defaults here are the generic ones; a model with a recipe replaces them (StudySpec).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: SearchInt = Field(  # type: ignore[valid-type]
        default=10, description="passes over the training set (the pruner's steps)"
    )
    batch_size: SearchInt = Field(  # type: ignore[valid-type]
        default=512, description="training images per step"
    )
    optimizer: SearchStr = Field(  # type: ignore[valid-type]
        default="sgd", description="sgd (momentum, nesterov) or adamw (betas)"
    )
    lr: SearchFloat = Field(  # type: ignore[valid-type]
        default=0.1, description="peak learning rate; the schedule scales it"
    )
    momentum: SearchFloat = Field(  # type: ignore[valid-type]
        default=0.9, description="SGD only (AdamW: betas)"
    )
    nesterov: SearchBool = Field(  # type: ignore[valid-type]
        default=True, description="SGD: Nesterov momentum"
    )
    weight_decay: SearchFloat = Field(  # type: ignore[valid-type]
        default=5e-4, description="on conv/linear weights; never norm, bias or activation ones"
    )
    schedule: SearchStr = Field(  # type: ignore[valid-type]
        default="onecycle", description="lr schedule after the warm-up"
    )
    warmup_epochs: SearchFloat = Field(  # type: ignore[valid-type]
        default=1.0, description="epochs of lr warm-up (fractions allowed)"
    )
    label_smoothing: SearchFloat = Field(  # type: ignore[valid-type]
        default=0.0, description="cross-entropy label smoothing"
    )
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    precision: SearchStr = Field(  # type: ignore[valid-type]
        default="auto", description="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    compile: SearchBool = Field(  # type: ignore[valid-type]
        default=False, description="torch.compile the model"
    )
    eval_batch_size: SearchInt = Field(  # type: ignore[valid-type]
        default=1024, description="images per evaluation batch"
    )
    bias_lr_scale: SearchFloat = Field(  # type: ignore[valid-type]
        default=1.0, description="lr multiplier of norm and bias parameters (airbench's)"
    )
    grad_clip: SearchFloat | None = Field(  # type: ignore[valid-type]
        default=None,
        description="clip the global L2 norm of all gradients to this value at every step; "
        "null = no clipping",
    )
    betas: Annotated[tuple[_Beta, _Beta], BeforeValidator(_betas_pair)] = Field(
        default=BETAS_DEFAULT,
        description="AdamW's [beta1, beta2], each in [0, 1). Fixed, never searched",
    )
    lookahead: LookaheadField = Field(
        default=None,
        description="airbench's average of the weights, copied back into the net: "
        "{start_epoch, every, decay, power} (missing keys take their defaults); null = off. "
        "Fixed, never searched",
    )
    ema: EmaField = Field(
        default=None,
        description="evaluate an average of the weights: {decay, start_epoch, every} "
        "({} = the defaults); null = the net's own weights. Fixed, never searched",
    )
    tta: Annotated[
        str,
        _fixed_value(
            "training.tta",
            Domain("str", choices=TTA_MODES),
            " (every trial's accuracy must measure the same thing)",
        ),
    ] = Field(
        default="none",
        description="test-time augmentation at every evaluation: none | flip (each image and "
        "its mirror) | flip_translate (also the image shifted one pixel up-left and down-right, "
        "each with its mirror: six passes). Fixed, never searched",
        json_schema_extra={"enum": list(TTA_MODES)},
    )


TRAINING_DOMAINS: dict[str, Domain] = {
    "epochs": Domain("int", low=1, high=MAX_EPOCHS),
    "batch_size": Domain("int", low=1),
    "optimizer": Domain("str", choices=OPTIMIZERS),
    "lr": Domain("float", low=0.0, low_open=True),
    "momentum": Domain("float", low=0.0, high=1.0, high_open=True),
    "nesterov": Domain("bool"),
    "weight_decay": Domain("float", low=0.0),
    "schedule": Domain("str", choices=SCHEDULES),
    "warmup_epochs": Domain("float", low=0.0),
    "label_smoothing": Domain("float", low=0.0, high=1.0, high_open=True),
    "precision": Domain("str", choices=PRECISIONS),
    "compile": Domain("bool"),
    "eval_batch_size": Domain("int", low=1),
    "bias_lr_scale": Domain("float", low=0.0, low_open=True),
    "grad_clip": Domain("float", low=0.0, low_open=True),  # or null: off
}
AUGMENT_DOMAINS: dict[str, Domain] = {
    "crop_padding": Domain("int", low=0, high=16),
    "flip": Domain("bool"),
}
MODEL_DOMAINS: dict[str, Domain] = {
    "name": Domain("str", choices=MODEL_NAMES),
    "width": Domain("float", low=0.0, low_open=True, high=8.0),
}


class ActivationSpec(BaseModel):
    """One family's search settings; its parameters and options are extra keys (registry)."""

    model_config = ConfigDict(extra="allow")

    scope: SearchStr | None = Field(  # type: ignore[valid-type]
        default=None, description="shared | per_layer | per_channel (default: the family's)"
    )
    trainable: dict[str, StrictBool] = Field(
        default_factory=dict, description="parameter name -> trained or not (default: the family's)"
    )
    preset: SearchStr | None = Field(  # type: ignore[valid-type]
        default=None, description="one of the family's named presets"
    )
    init_target: SearchStr | None = Field(  # type: ignore[valid-type]
        default=None, description="PAU/OPAU: " + " | ".join(FIT_TARGETS)
    )
    init_interval: tuple[_FiniteFloat, _FiniteFloat] | None = Field(
        default=None, description="PAU/OPAU fit interval, default [-3, 3]"
    )
    clamp: _FiniteFloat | None = Field(default=None, gt=0, description="PAU/OPAU: clamp |x| first")

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

    name: Literal["tpe", "random", "cmaes", "qmc", "grid"] = Field(
        default="tpe",
        description="grid: every configuration once, budget min(n_trials, grid size)",
    )
    seed: Annotated[StrictInt, _within("sampler.seed", *SEED_RANGE)] | None = Field(
        default=None,
        description="tpe, random: trial n draws from (seed, n) in every worker, so the same "
        "history gives the same proposals; qmc: the scramble seed every worker shares (null: "
        "derived from the study); cmaes, grid: offset at random per worker process "
        "(docs/workers.md)",
        json_schema_extra=_bounds(*SEED_RANGE),
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
        StrictInt, _within("sampler.n_startup_trials", 0, MAX_TRIALS, cap=True)
    ] = Field(
        default=10,
        description=f"{_used_by(SAMPLER_FIELDS, 'n_startup_trials')}: random trials before "
        "the sampler's model is used",
        json_schema_extra=_bounds(0, MAX_TRIALS),
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
        StrictInt, _within("pruner.n_startup_trials", 0, MAX_TRIALS, cap=True)
    ] = Field(
        default=5,
        description=f"{_used_by(PRUNER_FIELDS, 'n_startup_trials')}: trials that finish "
        "before any is pruned",
        json_schema_extra=_bounds(0, MAX_TRIALS),
    )
    n_warmup_steps: Annotated[
        StrictInt, _within("pruner.n_warmup_steps", 0, MAX_EPOCHS, cap=True)
    ] = Field(
        default=0,
        description=f"{_used_by(PRUNER_FIELDS, 'n_warmup_steps')}: epochs of a trial before it "
        "can be pruned",
        json_schema_extra=_bounds(0, MAX_EPOCHS),
    )
    interval_steps: Annotated[
        StrictInt, _within("pruner.interval_steps", 1, MAX_EPOCHS, cap=True)
    ] = Field(
        default=1,
        description=f"{_used_by(PRUNER_FIELDS, 'interval_steps')}: epochs between pruning checks",
        json_schema_extra=_bounds(1, MAX_EPOCHS),
    )
    percentile: StrictFloat = Field(
        default=25.0,
        gt=0,
        lt=100,
        description=f"{_used_by(PRUNER_FIELDS, 'percentile')}: a trial in this bottom "
        "percentile of the trials at the same epoch is pruned (median is percentile 50)",
    )
    min_resource: Annotated[
        int | Literal["auto"], _int_or_auto("pruner.min_resource", 1, MAX_EPOCHS, cap=True)
    ] = Field(
        default="auto",
        description="hyperband (auto = 1), successive_halving (auto: from the first finished "
        "trial): epochs before a trial can be pruned",
        json_schema_extra=_bounds(1, MAX_EPOCHS),
    )
    max_resource: Annotated[
        int | Literal["auto"], _int_or_auto("pruner.max_resource", 1, MAX_EPOCHS, cap=True)
    ] = Field(
        default="auto",
        description=f"{_used_by(PRUNER_FIELDS, 'max_resource')}: at least min_resource (auto: "
        "from the first finished trial) (epochs)",
        json_schema_extra=_bounds(1, MAX_EPOCHS),
    )
    reduction_factor: Annotated[
        StrictInt, _within("pruner.reduction_factor", 2, MAX_EPOCHS, cap=True)
    ] = Field(
        default=3,
        description=f"{_used_by(PRUNER_FIELDS, 'reduction_factor')}: 1 in this many trials "
        "goes on at each rung",
        json_schema_extra=_bounds(2, MAX_EPOCHS),
    )
    min_early_stopping_rate: Annotated[
        StrictInt, _within("pruner.min_early_stopping_rate", 0, MAX_EPOCHS, cap=True)
    ] = Field(
        default=0,
        description=f"{_used_by(PRUNER_FIELDS, 'min_early_stopping_rate')}: its first rung is "
        "at min_resource × reduction_factor ** this",
        json_schema_extra=_bounds(0, MAX_EPOCHS),
    )


class TimeoutsSpec(BaseModel):
    """Time limits in seconds."""

    model_config = ConfigDict(extra="forbid")

    trial_s: Annotated[StrictInt, _within("timeouts.trial_s", 1, MAX_TRIAL_S, cap=True)] | None = (
        Field(
            default=3600,
            description="one trial's wall time (each seed's, with seeds > 1); null = none",
            json_schema_extra=_bounds(1, MAX_TRIAL_S),
        )
    )
    study_s: Annotated[StrictInt, _within("timeouts.study_s", 1, MAX_STUDY_S, cap=True)] | None = (
        Field(
            default=None,
            description="the whole study, from its first claim: past it no new trial starts and "
            "queued retries are cancelled; running trials finish, then the study completes with a "
            "note saying so; null = none",
            json_schema_extra=_bounds(1, MAX_STUDY_S),
        )
    )


class StudySpec(BaseModel):
    """A study: data, model, training, activation families to search, sampler and budget."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[Literal[1], _exact_int("version")] = Field(
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
    n_trials: Annotated[StrictInt, _within("n_trials", 1, MAX_TRIALS)] = Field(
        default=20,
        description="the study's budget of trials, baselines included (grid: see sampler)",
        json_schema_extra=_bounds(1, MAX_TRIALS),
    )
    seeds: Annotated[StrictInt, _within("seeds", 1, MAX_SEEDS)] = Field(
        default=1,
        description="seeds per configuration (each trial trains this many times)",
        json_schema_extra=_bounds(1, MAX_SEEDS),
    )
    seed: Annotated[StrictInt, _within("seed", *SEED_RANGE)] = Field(
        default=0,
        description="training seed of a trial's first run",
        json_schema_extra=_bounds(*SEED_RANGE),
    )
    priority: Annotated[StrictInt, _within("priority", *PRIORITY_RANGE)] = Field(
        default=0,
        description="higher runs first (workers claim the highest-priority runnable study)",
        json_schema_extra=_bounds(*PRIORITY_RANGE),
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
        if _at_submission(info) and not value.strip():
            raise PydanticCustomError(
                "invalid_spec", "{reason}", {"reason": "name must not be blank"}
            )
        return value

    @field_validator("description")
    @classmethod
    def _description_capped(cls, value: str, info: ValidationInfo) -> str:
        # A new spec's only (SUBMISSION): nothing but people read the description.
        if _at_submission(info) and len(value) > MAX_DESCRIPTION_CHARS:
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
        errors = _Errors("StudySpec")
        submission = _at_submission(info)
        if submission:  # what the user meant; stored specs ran without these (SUBMISSION)
            _check_unused(errors, "sampler", self.sampler, SAMPLER_FIELDS)
            _check_unused(errors, "pruner", self.pruner, PRUNER_FIELDS)
            _check_dataset_path(errors, self.dataset)
            _check_pruner(errors, self.pruner)
        _check_section(errors, ("model",), self.model, MODEL_DOMAINS)
        _check_section(errors, ("training",), self.training, TRAINING_DOMAINS)
        _check_section(errors, ("training", "augment"), self.training.augment, AUGMENT_DOMAINS)
        _check_ema_start(errors, self.training)
        _check_dataset(errors, self.dataset)
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
            _check_activation(errors, key, entry, self)
        if self.sampler.name == "grid":
            continuous = [d.name for d in self.search_space() if _is_continuous(d)]
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
        return list(_search_dims(self))

    def family_keys(self) -> list[str]:
        """Activation choices in spec order (family names or aliases)."""
        return list(self.activations)


def model_training_defaults(model: Any) -> dict[str, Any]:
    """The recipe values replacing a spec's generic training defaults; {} when there are none.

    `model` is the spec's model as written (a name or a mapping) or a ModelSpec; a searched
    model name has no recipe. Keys the spec does not take (augment.pad_mode) are left out.
    """
    name = model.name if isinstance(model, ModelSpec) else model
    if isinstance(model, Mapping):
        name = model.get("name")
    found = spec_recipe(name) if isinstance(name, str) else None
    if found is None:
        return {}
    defaults = {k: v for k, v in found.items() if k in TrainingSpec.model_fields}
    if "augment" in defaults:
        defaults["augment"] = {
            k: v for k, v in defaults["augment"].items() if k in AugmentSpec.model_fields
        }
    return defaults


def _given_training(training: Any) -> dict[str, Any] | None:
    """The training fields a spec gives, as a fresh mapping (None: not a section to fill)."""
    if isinstance(training, TrainingSpec):
        given = {k: getattr(training, k) for k in training.model_fields_set}
        augment = given.get("augment")
        if isinstance(augment, AugmentSpec):
            given["augment"] = {k: getattr(augment, k) for k in augment.model_fields_set}
        return given
    return dict(training) if isinstance(training, Mapping) else None


def _is_continuous(dim: SearchDim) -> bool:
    return isinstance(dim.dist, Range) and dim.kind == "float" and dim.dist.step is None


# -- grid -------------------------------------------------------------------------------------
def is_shared_dim(dim: SearchDim) -> bool:
    """A model or training parameter: searched in every family's configurations."""
    return dim.name.split(".", 1)[0] in ("model", "training")


def grid_count(dim: SearchDim) -> int:
    """How many values a discrete dimension has on the grid (without listing them)."""
    dist = dim.dist
    if isinstance(dist, Choices):
        return len(dist.choices)
    if dist.step is None and dim.kind == "float":
        raise ValueError(f"{dim.name} is continuous: the grid needs a step or choices")
    step = dist.step or 1
    if dim.kind == "int":
        return (int(dist.high) - int(dist.low)) // int(step) + 1
    return math.floor((dist.high - dist.low) / step + 1e-9) + 1


def grid_values(dim: SearchDim) -> list[Any]:
    """The values of a discrete dimension on the grid, low to high (choices in their order)."""
    dist = dim.dist
    if isinstance(dist, Choices):
        return list(dist.choices)
    count = grid_count(dim)
    if dim.kind == "int":
        return [int(dist.low) + i * int(dist.step or 1) for i in range(count)]
    assert dist.step is not None  # grid_count refused a continuous range
    return [round(dist.low + i * dist.step, 12) for i in range(count)]


def grid_size(spec: StudySpec) -> int:
    """Distinct configurations of a grid over the spec: a family's parameters vary only with it.

    Each family contributes the product of its own searched parameters' counts, times the
    product of the searched model/training parameters' counts (shared by every family).
    """
    shared = math.prod(grid_count(d) for d in spec.search_space() if is_shared_dim(d))
    per_family = sum(
        math.prod(grid_count(d) for d in activation_dims(key, entry))
        for key, entry in spec.activations.items()
    )
    return shared * per_family


def _check_section(
    errors: _Errors, loc: tuple[str, ...], section: BaseModel, domains: Mapping[str, Domain]
) -> None:
    for name, domain in domains.items():
        value = getattr(section, name)
        if value is None and type(section).model_fields[name].default is None:
            continue  # a field whose null means off (training.grad_clip)
        for msg in check_value(value, domain):
            errors.add((*loc, name), msg)


def _check_dataset_path(errors: _Errors, dataset: DatasetSpec) -> None:
    """path only for folder datasets (a worker reads CIFAR from its --data, whatever path says)."""
    if dataset.name != "folder" and dataset.path is not None:
        errors.add(
            ("dataset", "path"),
            f"path is only for name: folder; {dataset.name} is read from where the worker's "
            f"--data (ACTSEARCH_DATA) points: {_leave_out('path')}, or use name: folder",
        )


def _check_dataset(errors: _Errors, dataset: DatasetSpec) -> None:
    """CIFAR's split within its 50,000 training images (the worker's split needs it)."""
    if dataset.name not in ("cifar10", "cifar100"):
        return  # a folder's size is known only to the worker, which checks the split
    if dataset.val_size >= CIFAR_TRAIN_IMAGES:
        errors.add(
            ("dataset", "val_size"),
            f"{dataset.name}'s training set has {CIFAR_TRAIN_IMAGES} images: val_size must be "
            f"below that, not {dataset.val_size}",
        )
    elif dataset.train_subset is not None:
        left = CIFAR_TRAIN_IMAGES - dataset.val_size
        if dataset.train_subset > left:
            errors.add(
                ("dataset", "train_subset"),
                f"{dataset.name} has {left} training images left after val_size "
                f"({dataset.val_size}): train_subset must be at most {left}, not "
                f"{dataset.train_subset}",
            )


def _check_unused(
    errors: _Errors,
    section: str,
    spec: SamplerSpec | PrunerSpec,
    table: Mapping[str, tuple[str, ...]],
) -> None:
    """A field the chosen sampler or pruner ignores, set to anything but its default.

    The default is accepted there, since every stored spec states every field; any other value
    looks like a setting and changes nothing (`pruner: {name: median, percentile: 10}`).
    """
    name = spec.name
    for field, info in type(spec).model_fields.items():
        users = [user for user, fields in table.items() if field in fields]
        if not users or name in users or getattr(spec, field) == info.default:
            continue  # name and seed (used by all), a used field, or a default
        only = f"{' and '.join(users)} {section}" + ("s do" if len(users) > 1 else " does")
        errors.add(
            (section, field),
            f"the {name} {section} does not use {field} (only the {only}): {_leave_out(field)} "
            f"or give its default, {_shown(info.default)}; or set {section}.name: "
            + " or ".join(users),
        )


def _leave_out(field: str) -> str:
    """How to drop a field: a clone's changes (a JSON merge patch) keep what they leave out."""
    return f"leave {field} out (in a clone's changes: set it to null)"


def _shown(value: Any) -> str:
    """A default as a spec writes it: true, null, 25.0, auto."""
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _check_pruner(errors: _Errors, pruner: PrunerSpec) -> None:
    """Hyperband's max_resource below its min_resource: Optuna takes it and never prunes.

    A new spec's only (SUBMISSION): a stored one ran like that, without pruning.
    """
    low = 1 if pruner.min_resource == "auto" else pruner.min_resource
    high = pruner.max_resource
    if pruner.name == "hyperband" and high != "auto" and high < low:
        errors.add(
            ("pruner", "max_resource"),
            f"hyperband's max_resource ({high}) must be at least its min_resource ({low}), or "
            "it has no bracket and never prunes",
        )


def _check_ema_start(errors: _Errors, training: TrainingSpec) -> None:
    """ema.start_epoch must be below every epochs value a trial can get (the trainer's rule)."""
    if training.ema is None:
        return
    value: Any = training.epochs
    if isinstance(value, Choices):
        candidates = list(value.choices)
    else:
        candidates = [value.low] if isinstance(value, Range) else [value]
    valid = [e for e in candidates if TRAINING_DOMAINS["epochs"].check(e) is None]
    if not valid:
        return  # epochs itself is wrong, and said so
    fewest, start = min(int(e) for e in valid), training.ema["start_epoch"]
    if start >= fewest:
        errors.add(
            ("training", "ema", "start_epoch"),
            f"start_epoch ({start}) must be below epochs ({fewest}"
            + (", the fewest a trial can get" if value != fewest else "")
            + f"), or the average never starts; lower it or {_leave_out('ema')}",
        )


def _entry_help(family: Family) -> str:
    extra = [k for k in ENTRY_KEYS if k not in ("init_target", "init_interval", "clamp")]
    if family.fit_init:
        extra += ["init_target", "init_interval"]
    if family.polynomial:
        extra.append("clamp")
    return (
        f"parameters: {', '.join(family.params) or 'none'}; options: "
        f"{', '.join(family.options) or 'none'}; also: {', '.join(extra)}"
    )


def option_or_param_domain(family: Family, name: str) -> Domain | None:
    """The domain of a family parameter or option, or None when the family has no such key."""
    if name in family.params:
        return family.params[name].domain
    if name in family.options:
        return family.options[name].domain
    return None


def _check_activation(errors: _Errors, key: str, entry: ActivationSpec, spec: StudySpec) -> None:
    loc: tuple[str, ...] = ("activations", key)
    try:
        family = get_family(key)
    except ValueError as exc:
        errors.add(loc, str(exc))
        return
    alias = get_alias(key)
    extras = entry.model_extra if entry.model_extra is not None else {}
    for name in list(extras):
        domain = option_or_param_domain(family, name)
        if domain is None:
            errors.add(
                (*loc, name), f"{key} has no parameter or option {name!r}; {_entry_help(family)}"
            )
            continue
        try:
            value = _ANY_VALUE.validate_python(extras[name])
        except ValidationError as exc:
            errors.add((*loc, name), exc.errors()[0]["msg"])
            continue
        extras[name] = value
        for msg in check_value(value, domain):
            errors.add((*loc, name), msg)
        if alias is not None:
            fixed = {**alias.params, **alias.options}
            if name in fixed and value != fixed[name]:
                errors.add((*loc, name), f"{key} fixes {name} = {fixed[name]!r}")
    _check_scope(errors, loc, entry, family)
    _check_trainable(errors, loc, key, entry, family)
    _check_preset_and_init(errors, loc, entry, family)
    if "lower" in extras and "upper" in extras:
        lower, upper = extras["lower"], extras["upper"]
        if not is_searched(lower) and not is_searched(upper) and lower > upper:
            errors.add((*loc, "lower"), "lower must be ≤ upper")
    if family.head_only:
        names = _choices_of(spec.model.name)
        bad = [n for n in names if n not in MLP_HEAD_MODELS]
        if bad:
            errors.add(
                loc,
                f"{key} is for MLP heads only; models with one: {', '.join(MLP_HEAD_MODELS)} "
                f"(not {', '.join(map(str, bad))})",
            )


def _choices_of(value: Any) -> list[Any]:
    if isinstance(value, Choices):
        return list(value.choices)
    return [value]


def _check_scope(
    errors: _Errors, loc: tuple[str, ...], entry: ActivationSpec, family: Family
) -> None:
    if entry.scope is None:
        return
    allowed = family.scopes
    domain = Domain("str", choices=tuple(allowed))
    for msg in check_value(entry.scope, domain):
        errors.add((*loc, "scope"), f"{msg} (scopes of {family.name}: {', '.join(allowed)})")


def _check_trainable(
    errors: _Errors, loc: tuple[str, ...], key: str, entry: ActivationSpec, family: Family
) -> None:
    alias = get_alias(key)
    for name, flag in entry.trainable.items():
        if name in family.trainable_names:
            if alias is not None and name in alias.trainable and flag != alias.trainable[name]:
                errors.add((*loc, "trainable", name), f"{key} fixes trainable {name} = false")
            continue
        if name in family.params:
            if flag:
                errors.add((*loc, "trainable", name), f"{family.name}'s {name} cannot be trainable")
            continue
        errors.add(
            (*loc, "trainable", name),
            f"{key} has no trainable parameter {name!r}; trainable: "
            f"{', '.join(family.trainable_names) or 'none'}",
        )


def _check_preset_and_init(
    errors: _Errors, loc: tuple[str, ...], entry: ActivationSpec, family: Family
) -> None:
    extras = entry.model_extra or {}
    if entry.preset is not None:
        domain = Domain("str", choices=tuple(family.presets))
        for msg in check_value(entry.preset, domain):
            errors.add(
                (*loc, "preset"),
                f"{msg} (presets of {family.name}: {', '.join(family.presets) or 'none'})",
            )
        for preset_name in _choices_of(entry.preset):
            preset = family.presets.get(str(preset_name), {})
            for opt, fixed in preset.items():
                if opt in family.options and opt in extras and _choices_of(extras[opt]) != [fixed]:
                    errors.add((*loc, opt), f"preset {preset_name!r} fixes {opt} = {fixed!r}")
            if entry.init_target is not None and any(k in preset for k in family.coefficients):
                errors.add(
                    (*loc, "init_target"),
                    f"preset {preset_name!r} sets the coefficients; give preset or init_target",
                )
    if not family.fit_init:
        for name in ("init_target", "init_interval"):
            if getattr(entry, name) is not None:
                errors.add((*loc, name), f"{family.name} takes no {name} (only pau, opau)")
    elif entry.init_target is not None:
        for msg in check_value(entry.init_target, Domain("str", choices=FIT_TARGETS)):
            errors.add((*loc, "init_target"), msg)
    if entry.init_interval is not None and not entry.init_interval[0] < entry.init_interval[1]:
        errors.add((*loc, "init_interval"), "init_interval must be [low, high] with low < high")
    if entry.clamp is not None and not family.polynomial:
        errors.add((*loc, "clamp"), f"{family.name} takes no clamp (only pau, opau)")


def _search_dims(spec: StudySpec) -> Iterator[SearchDim]:
    for name, domain in MODEL_DOMAINS.items():
        value = getattr(spec.model, name)
        if is_searched(value):
            yield SearchDim(f"model.{name}", value, _dim_kind(domain, value))
    for name, domain in TRAINING_DOMAINS.items():
        value = getattr(spec.training, name)
        if is_searched(value):
            yield SearchDim(f"training.{name}", value, _dim_kind(domain, value))
        if name == "label_smoothing":  # keep the nested section at its place in the spec
            for aug, aug_domain in AUGMENT_DOMAINS.items():
                aug_value = getattr(spec.training.augment, aug)
                if is_searched(aug_value):
                    yield SearchDim(
                        f"training.augment.{aug}", aug_value, _dim_kind(aug_domain, aug_value)
                    )
    keys = spec.family_keys()
    if len(keys) > 1:
        yield SearchDim("activation", Choices(choices=list(keys)), "categorical")
    for key in keys:
        yield from activation_dims(key, spec.activations[key])


def activation_dims(key: str, entry: ActivationSpec) -> Iterator[SearchDim]:
    """The conditional Optuna parameters of one activation entry (`<key>.<name>`)."""
    family = get_family(key)
    for name, value in entry.values().items():
        domain = option_or_param_domain(family, name)
        if domain is not None and is_searched(value):
            yield SearchDim(f"{key}.{name}", value, _dim_kind(domain, value))
    for name in ("scope", "preset", "init_target"):
        value = getattr(entry, name)
        if isinstance(value, Choices):
            yield SearchDim(f"{key}.{name}", value, "categorical")


# -- parsing --------------------------------------------------------------------------------
def _loc(parts: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in parts if not (isinstance(p, str) and p.startswith("@")))


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return "unknown field"
    return msg.removeprefix("Value error, ")


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
