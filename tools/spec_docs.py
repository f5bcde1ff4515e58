"""docs/spec.md, the study-spec reference, generated from the spec's pydantic models.

`python -m tools.docs` writes it with docs/activations.md (`--check`: fail when stale).
Every table row comes from a model's fields and JSON schema (the dataset, model and training
sections are built from the trial contract, search_space.contract), the bounds of the
searchable fields from the spec's *_DOMAINS, the recipes from search_space.recipes, and the
example from examples/quickstart.yaml, parsed and turned into a trial config by the real code.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from search_space.recipes import MODEL_RECIPES, SPEC_RECIPE_MODELS
from search_space.registry import ALIASES, ALL_SCOPES, FAMILIES, FIT_TARGETS, Domain, get_family
from search_space.spec import (
    AUGMENT_DOMAINS,
    EMA_DEFAULTS,
    LOOKAHEAD_DEFAULTS,
    MAX_GRID_POINTS,
    MAX_SEEDS,
    MAX_TRIALS,
    MLP_HEAD_MODELS,
    MODEL_DOMAINS,
    PRUNER_FIELDS,
    SAMPLER_FIELDS,
    TRAINING_DOMAINS,
    ActivationSpec,
    AugmentSpec,
    Choices,
    DatasetSpec,
    EmaSpec,
    LookaheadSpec,
    ModelSpec,
    PromoteSpec,
    PrunerSpec,
    Range,
    SamplerSpec,
    SearchDim,
    StageSpec,
    StudySpec,
    TimeoutsSpec,
    TrainingSpec,
    model_training_defaults,
    parse_campaign,
    parse_spec,
)
from search_space.spec.campaign import (
    FIRST_STAGE_ONLY,
    MAX_MIN_DELTA,
    MAX_STAGE_MODELS,
    MAX_STAGES,
)
from search_space.suggest import suggest_config, trial_budget

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "spec.md"
EXAMPLE_PATH = ROOT / "examples" / "quickstart.yaml"
EXAMPLE_HEADING = "A complete example"
CAMPAIGN_EXAMPLE_PATH = ROOT / "examples" / "campaign-cpu.yaml"
CAMPAIGN_HEADING = "Campaigns"
_TYPE_NAMES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}


@dataclass(frozen=True)
class Section:
    """One part of the spec: its path, the type that validates it and where its facts live."""

    path: str  # "" for the top level
    schema_type: Any  # a pydantic model or a TypedDict
    domains: Mapping[str, Domain] | None = None  # bounds of the searchable fields
    defaults: Mapping[str, Any] | None = None  # a TypedDict's: the keys' defaults
    allowed: Mapping[str, str] | None = None  # what no schema states (it depends on a family)
    intro: str = ""  # text after the class docstring's first paragraph

    @property
    def title(self) -> str:
        """The heading: the dotted path, or "top level"."""
        return self.path or "top level"


def _fields_used(section: str, table: Mapping[str, tuple[str, ...]], *common: str) -> str:
    """Which fields each sampler (pruner) uses, and what happens to the others."""
    each = "; ".join(
        f"`{name}`: " + (", ".join(f"`{f}`" for f in fields) if fields else "no other field")
        for name, fields in table.items()
    )
    also = "".join(f" and `{f}`" for f in common)
    return (
        f"Besides `name`{also}, each {section} uses these fields: {each}. A new spec (submitted "
        f"or cloned) that sets a field its {section} does not use to anything but that field's "
        "default is refused, naming the field; the default is accepted, since a stored spec "
        "states every field. Specs stored before this check run as they are."
    )


# Allowed values of activation entry keys: they depend on the family, so no schema holds them.
_ENTRY_ALLOWED = {
    "scope": f"the family's scopes, of {Domain('str', choices=ALL_SCOPES)}",
    "preset": "the family's presets ([activations.md](activations.md))",
    "init_target": str(Domain("str", choices=FIT_TARGETS)),
    "init_interval": "[low, high] with low < high",
}
SECTIONS: tuple[Section, ...] = (
    Section("", StudySpec, allowed={"baselines": "family names or aliases, any case"}),
    Section("dataset", DatasetSpec),
    Section(
        "model",
        ModelSpec,
        MODEL_DOMAINS,
        intro="`model: lenet` is short for `model: {name: lenet}`. Head-only activation "
        f"families ({', '.join(f'`{n}`' for n, f in FAMILIES.items() if f.head_only)}) need a "
        f"model with an MLP head: {', '.join(f'`{m}`' for m in MLP_HEAD_MODELS)}.",
    ),
    Section(
        "training",
        TrainingSpec,
        TRAINING_DOMAINS,
        intro="The defaults below are the generic ones; a model with a recipe replaces them "
        "(see [Model recipes](#model-recipes)). [workers.md](workers.md#training-options) "
        "explains `grad_clip`, `ema`, `tta`, `lookahead` and `betas` in detail.",
    ),
    Section("training.augment", AugmentSpec, AUGMENT_DOMAINS),
    Section(
        "training.ema",
        EmaSpec,
        defaults=EMA_DEFAULTS,
        intro="`ema: null` (the default) evaluates the net's own weights; `ema: {}` averages "
        "with every default. Missing keys take their defaults, and the stored spec states them.",
    ),
    Section(
        "training.lookahead",
        LookaheadSpec,
        defaults=LOOKAHEAD_DEFAULTS,
        intro="`lookahead: null` (the default) is off; `lookahead: {}` averages with every "
        "default. Missing keys take their defaults, and the stored spec states them.",
    ),
    Section(
        "activations",
        ActivationSpec,
        allowed=_ENTRY_ALLOWED,
        intro="`activations` maps each family to search (a name or alias, any case) to its "
        "entry; one family is picked per trial. An entry holds the family's own parameters and "
        "options, listed with their domains and default search ranges in "
        "[activations.md](activations.md), plus the keys below. `relu: {}` (or `relu:` alone) "
        "takes every default. Families: "
        + ", ".join(f"`{n}`" for n in FAMILIES)
        + "; aliases: "
        + ", ".join(f"`{n}` (`{a.target}`)" for n, a in ALIASES.items())
        + ".",
    ),
    Section("sampler", SamplerSpec, intro=_fields_used("sampler", SAMPLER_FIELDS, "seed")),
    Section("pruner", PrunerSpec, intro=_fields_used("pruner", PRUNER_FIELDS)),
    Section("timeouts", TimeoutsSpec),
    Section(
        "stages",
        StageSpec,
        allowed={
            "model": "a model name or `{name, width}` (see [`model`](#model)), or a list of "
            f"them (at most {MAX_STAGE_MODELS}, each once)",
            "training": "fields of [`training`](#training)",
            "sampler": "a [`sampler`](#sampler) mapping",
            "timeouts": "fields of [`timeouts`](#timeouts)",
        },
        intro=f"A campaign's `stages` (1 to {MAX_STAGES}) is a list of these; see "
        f"[{CAMPAIGN_HEADING}](#campaigns). "
        + " and ".join(f"`{f}`" for f in FIRST_STAGE_ONLY)
        + " are the first stage's only: a later stage runs exactly the configurations "
        "promoted into it.",
    ),
    Section(
        "stages.promote",
        PromoteSpec,
        allowed={"min_delta": f"[{-MAX_MIN_DELTA:g}, {MAX_MIN_DELTA:g}] or null"},
    ),
)
_SECTION_OF_TYPE = {s.schema_type.__name__: s for s in SECTIONS}

HEADER = """\
# Study spec reference

Generated from `search_space/contract/` (every option of a trial, typed once),
`search_space/spec/` (the pydantic models that validate a spec), `search_space/recipes.py` and
`examples/quickstart.yaml` by `python -m tools.docs`; do not edit by hand (a test checks this
file equals the generated text).

A study spec is a YAML or JSON mapping: `actsearch submit SPEC.yaml`, or the body of
`POST /api/v1/studies`. Only `name` and `activations` are required. Unknown fields are refused,
and every error names the field and the reason (`activations.smu.alpha: empty range: low (0.5)
must be < high (0.1)`); the API answers 422 with the same list.

## Fixed and searched values
A field marked *searchable* in the tables below takes one of:

| written as | meaning | Optuna |
|---|---|---|
| `lr: 0.1` | fixed: every trial uses this value | not a parameter |
| `lr: {{low: 1e-3, high: 1.0, log: true}}` | a range: `log` samples log-uniformly (needs low > 0), `step` makes it discrete (`{{low: 0, high: 0.5, step: 0.1}}`); an integer field needs integer `low`, `high` and `step` | `suggest_float` / `suggest_int` |
| `optimizer: {{choices: [sgd, adamw]}}` | one of the listed values (distinct) | `suggest_categorical` |

String and boolean fields take a value or `choices`, never a range. Every value, searchable or
fixed, must have the field's type: `epochs: "10"`, `epochs: 10.5`, `lr: true`, `n_trials: "20"`,
`dataset.val_size: 5000.0` and `sampler.constant_liar: "yes"` are refused, not converted (an
integer is a valid number). Ranges must lie inside the field's allowed values; intervals are
written `[a, b]` (ends included) and `(a, b)` (ends excluded). Fields marked *fixed* take one
value for the whole study, never a distribution.

Each searched value becomes an Optuna parameter named by its path (`model.width`, `training.lr`,
`training.augment.flip`), and an activation family's as `<family>.<name>` (`smu.alpha`,
`pau.init_target`), asked only in trials of that family. With several families the categorical
parameter `activation` picks the trial's family.

## A trial's config
For each trial the sampler picks a family and a value for every searched parameter; the fixed
values pass through unchanged. The result is the trial's *resolved config*
([architecture.md](architecture.md#the-resolved-trial-config-plain-json-dict-the-contract-between-spec-and-worker)):
`dataset`, `model`, `training` and one `activation` block with every value filled in, plus
`seed`, `seeds` and `timeout_s`. It is stored with every run, so a result always states what
trained it. [Below](#{example_anchor}) is one for the example spec.

## Baseline trials
`baselines: [relu, gelu]` enqueues one trial per listed family before anything else: the family
at its registry defaults (a searched parameter of it at its default, moved inside the spec's
range, or the first choice when the default is not among the choices). A baseline family that
is not in `activations` is added to it with an empty entry. Model and training values are the
sampler's, except on a grid (see [Budget and grid studies](#budget-and-grid-studies)).

## Seeds per configuration
`seeds: N` (1 to {max_seeds}) trains each trial's configuration N times, with training seeds
`seed`, `seed + 1`, …, `seed + N - 1`. The trial's objective is the mean final validation
accuracy over the seeds and `value_std` their standard deviation; the record lists each seed's
values. The first seed's learning curve is stored per epoch and drives pruning. The data split
does not change with the seed (`dataset.split_seed` fixes it).

## No identical training twice
A *training* is one configuration (the trial's config with every default filled in) and one
seed. Two trainings with the same configuration, seed, data (its checksum) and training code
(a hash of the trainer's sources, the torch release and CPU or GPU) are the same training, and
none is paid for twice. When a trial would repeat one (a sampler drawing a parameter-free
family again, a retry, two workers racing), `repeats` decides:

| `repeats` | a repeat |
|---|---|
| `reseed` (default) | trains the same configuration with the next unused seed: the repeat adds evidence, and the run's config states the seed it trained |
| `reuse` | takes the recorded result without training (waiting while another worker trains it); the run names the run it took it from, and Optuna is told the recorded value |

`reuse` says where recorded trainings are looked for: `study` (default) this study only; `team`
every study of the database, so a configuration another study (or campaign) trained on the same
data with the same code answers for free, and team studies racing on one configuration train it
once; `none` never (every trial trains, identical ones included, e.g. to measure
non-determinism). Nothing is reused across other data, models, budgets or code versions.

## Enqueued configurations
`enqueue: [{{activation: smu, smu.alpha: 0.2, training.lr: 0.05}}, …]` runs these
configurations first, after the baselines, each once: Optuna parameter names as the sampler uses
them, every value one the spec's distribution can give. Searched parameters an entry leaves out
are the sampler's. A confirm study (`actsearch confirm ID --top K --seeds N`,
[evidence.md](evidence.md)) is its source's spec with `enqueue` = the K best configurations of
each family (the baseline's first), `n_trials` = their number, `seeds` = N, a fresh `seed` no
training of the source used, `repeats: reseed`, `reuse: study`, `sampler: random`,
`pruner: none` (pruning would keep only the lucky seeds), and `baselines: []` when the baseline's
best configuration is enqueued. Its trainings took no part in choosing the configurations, so its
comparisons can say *better* or *worse* ([evidence.md](evidence.md)); a search's say *promising* at
most.

## Budget and grid studies
`n_trials` (1 to {max_trials}) is the study's budget, baselines included: workers never run more
trials, however many race for them (a trial retried after its worker was lost counts once).
The `grid` sampler runs each configuration of the spec once: every activation family with each
combination of its own searched values and of the searched model and training values (every
range needs a `step`, or use `choices`; at most {max_grid:,} configurations). A family's
parameters vary only within that family's configurations, so `relu` is not trained once per
value of `smu.alpha`. The budget of a grid study is min(`n_trials`, grid size): it is complete
once the grid is exhausted, and a smaller `n_trials` runs a part spread over all of it. A
baseline on a grid is one of its configurations (searched model and training fields at the
spec's default, or the nearest grid value), run first and not again.

## New and stored specs
A new spec (submitted, or a clone's) passes every check. Workers re-read a study's stored spec
at every claim without the checks that only refuse what a worker ignores or runs harmlessly, so
a study stored before one of them was added runs as it did: a field the sampler or pruner does
not use, set to anything but its default ([sampler](#sampler), [pruner](#pruner));
`dataset.path` with a CIFAR dataset; a baseline listed twice; a blank `name`; hyperband's
`max_resource` below its `min_resource`; a grid of more than {max_grid:,} configurations; and
the upper bounds of `timeouts`, `sampler.n_startup_trials` and the pruner's counts. What a
worker cannot run (a CIFAR split past its 50,000 images, a `min_resource` below 1, a seed out
of range) is refused on every parse. A clone's changes are a JSON merge patch: a field they
leave out keeps the source study's value, so drop one by giving it as `null`.
"""

RECIPES = """\
## Model recipes
A spec whose model is fixed to {models} trains with that model's recipe
(`search_space/recipes.py`) unless the spec says otherwise: every `training` field the spec
leaves out takes the recipe's value instead of the generic default, `augment` key by key, and
fields the spec gives win (a searched `lr`, `epochs: 8`, `lookahead: null`). This happens when
the spec is parsed, so the stored spec states the values its trials use. A study that searches
the model (`name: {{choices: [proxy, resnet18]}}`) and every other model get the generic
defaults.
"""


def render() -> str:
    """The full text of docs/spec.md."""
    lines = [
        HEADER.format(
            example_anchor=anchor(EXAMPLE_HEADING),
            max_seeds=MAX_SEEDS,
            max_trials=f"{MAX_TRIALS:,}",
            max_grid=MAX_GRID_POINTS,
        )
    ]
    lines += _recipe_section()
    lines += _example_section()
    lines += _campaign_section()
    lines += ["## Reference", ""]
    for section in SECTIONS:
        lines += _reference_section(section)
        if section.path == "activations":
            lines += _baselines_section()
    return "\n".join(lines).rstrip() + "\n"


# -- text helpers -------------------------------------------------------------------------------
def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def inline(value: Any) -> str:
    """A value as YAML flow text (`{low: 0.0, high: 0.5}`, `[0.9, 0.999]`, `null`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        plain = value and not re.search(r"[\s,:#{}\[\]'\"]", value)
        return value if plain and yaml.safe_load(value) == value else json.dumps(value)
    if isinstance(value, BaseModel):
        return inline(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    raise TypeError(f"no inline form for {value!r}")


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped, one line."""
    return " ".join(text.split()).replace("|", "\\|")


def _summary(schema_type: Any) -> str:
    """The first paragraph of a class docstring, on one line."""
    doc = inspect.getdoc(schema_type) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _link(section: Section) -> str:
    return f"[`{section.title}`](#{anchor(section.title)})"


# -- reference tables ---------------------------------------------------------------------------
def _schema(schema_type: Any) -> dict[str, Any]:
    """The JSON schema of a model or TypedDict, as the API's OpenAPI text shows it."""
    if isinstance(schema_type, type) and issubclass(schema_type, BaseModel):
        return schema_type.model_json_schema()
    return TypeAdapter(schema_type).json_schema()


def _reference_section(section: Section) -> list[str]:
    lines = [f"### {section.title}", "", _summary(section.schema_type)]
    if section.intro:
        lines += ["", section.intro]
    lines += [
        "",
        "| field | type | default | allowed | searchable | description |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_row(section, name, prop) for name, prop in _properties(section)]
    if section.path == "activations":
        lines.append(
            "| *(a parameter or option of the family)* | number, integer, string or boolean | "
            "the family's | the family's domain | yes: value, range or choices (a string "
            "option: value or choices) | see [activations.md](activations.md) |"
        )
    return [*lines, ""]


def _properties(section: Section) -> Iterator[tuple[str, dict[str, Any]]]:
    schema = _schema(section.schema_type)
    required = set(schema.get("required", ()))
    for name, prop in schema["properties"].items():
        yield name, {**prop, "_required": name in required}


def _row(section: Section, name: str, prop: dict[str, Any]) -> str:
    domain = (section.domains or {}).get(name)
    searchable = _is_searchable(prop)
    if searchable and domain is None and section.path != "activations":
        raise ValueError(f"{section.path}.{name} is searchable but has no domain in spec.py")
    nested = _nested_section(prop)
    if domain is not None:
        kind = _TYPE_NAMES[domain.kind]
        allowed = str(domain)
        if any(b.get("type") == "null" for b in prop.get("anyOf", ())):
            kind, allowed = f"{kind} or null", f"{allowed} or null"  # null = off (grad_clip)
    else:
        kind = _type(prop)
        allowed = (section.allowed or {}).get(name) or _allowed(prop)
    if nested is not None:
        kind = f"mapping, see {_link(nested)}" + (" or null" if "null" in kind else "")
    if searchable:
        numeric = domain is not None and domain.kind in ("int", "float")
        search = "yes: value, range or choices" if numeric else "yes: value or choices"
    else:
        search = "fixed"
    description = prop.get("description", "")
    if nested is not None and not description:
        description = _summary(nested.schema_type)
    if not description:
        raise ValueError(f"{section.title}: field {name} has no description in spec.py")
    cells = [f"`{name}`", kind, _default(section, name, prop), allowed or "—", search, description]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _is_searchable(prop: Mapping[str, Any]) -> bool:
    """Whether the field's schema admits a Range or Choices (the spec's searchable union)."""
    refs = re.findall(r'"\$ref": "#/\$defs/(\w+)"', json.dumps(prop))
    return {"Range", "Choices"} <= set(refs)


def _nested_section(prop: Mapping[str, Any]) -> Section | None:
    for branch in [prop, *prop.get("anyOf", ()), prop.get("additionalProperties") or {}]:
        ref = branch.get("$ref", "") if isinstance(branch, Mapping) else ""
        found = _SECTION_OF_TYPE.get(ref.rsplit("/", 1)[-1])
        if found is not None:
            return found
    return None


def _type(prop: Mapping[str, Any]) -> str:
    """A short type name from a JSON-schema property."""
    if "anyOf" in prop:
        names = dict.fromkeys(_type(b) for b in prop["anyOf"])
        return " or ".join(names)
    if "oneOf" in prop:
        return _type(prop["oneOf"][0])
    if "const" in prop:  # a literal string (`auto`) reads better as itself
        const = prop["const"]
        return f"`{const}`" if isinstance(const, str) else "integer"
    if "$ref" in prop:
        return "mapping"
    kind = prop.get("type", "any")
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(_type(p) for p in prop["prefixItems"]) + "]"
        return f"list of {_type(prop.get('items', {}))}s"
    if kind == "object":
        if prop.get("additionalProperties") not in (None, True):
            return f"mapping of name to {_type(prop['additionalProperties'])}"
        return "mapping"
    return str(kind)


_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _allowed(prop: Mapping[str, Any]) -> str:
    """The values a JSON-schema property admits beyond its type; "" when any of its type."""
    # Bounds beside an anyOf (sampler.seed's) belong to its integer branch.
    bounds = {k: v for k, v in prop.items() if k in _BOUND_KEYS}
    branches = [
        {**bounds, **b} if b.get("type") == "integer" else b for b in prop.get("anyOf", [prop])
    ]
    parts: list[str] = []
    constrained = False
    for branch in branches:
        text = _constraint(branch)
        constrained = constrained or bool(text)
        if text:
            parts.append(text)
        elif branch.get("type") == "null":
            parts.append("null")
        else:
            parts.append(f"any {_type(branch)}")
    return " or ".join(parts) if constrained else ""


def _constraint(branch: Mapping[str, Any]) -> str:
    if "enum" in branch:
        return str(Domain("str", choices=tuple(str(v) for v in branch["enum"])))
    if "const" in branch:
        return f"`{inline(branch['const'])}`"
    if "minLength" in branch or "maxLength" in branch:
        return f"{branch.get('minLength', 0)} to {branch.get('maxLength', '∞')} characters"
    if "prefixItems" in branch:
        each = {_constraint(p) for p in branch["prefixItems"]}
        return f"each in {each.pop()}" if len(each) == 1 and "" not in each else ""
    low = branch.get("minimum", branch.get("exclusiveMinimum"))
    high = branch.get("maximum", branch.get("exclusiveMaximum"))
    if low is None and high is None:
        return ""
    kind: Literal["int", "float"] = "int" if branch.get("type") == "integer" else "float"
    return str(
        Domain(
            kind,
            low=low,
            high=high,
            low_open="exclusiveMinimum" in branch,
            high_open="exclusiveMaximum" in branch,
        )
    )


def _default(section: Section, name: str, prop: Mapping[str, Any]) -> str:
    if section.defaults is not None:
        return f"`{inline(section.defaults[name])}`"
    fields = section.schema_type.model_fields
    info = fields[name]
    if info.default_factory is not None:
        made = info.default_factory()
        return "its fields' defaults" if isinstance(made, BaseModel) else f"`{inline(made)}`"
    if info.default is PydanticUndefined or prop["_required"]:
        return "required"
    return f"`{inline(info.default)}`"


def _baselines_section() -> list[str]:
    """`baselines`, a top-level field, gets a heading of its own beside `activations`."""
    top = SECTIONS[0]
    prop = dict(_properties(top))["baselines"]
    return [
        "### baselines",
        "",
        "A top-level field: the families to run first, each as one trial at its defaults (see "
        "[Baseline trials](#baseline-trials)).",
        "",
        "| field | type | default | allowed | searchable | description |",
        "|---|---|---|---|---|---|",
        _row(top, "baselines", prop),
        "",
    ]


# -- recipes ------------------------------------------------------------------------------------
def _recipe_section() -> list[str]:
    models = ", ".join(f"`{m}`" for m in SPEC_RECIPE_MODELS)
    lines = [RECIPES.format(models=models)]
    recipes = {m: model_training_defaults(m) for m in SPEC_RECIPE_MODELS}
    lines += [
        "| field | generic default | " + " | ".join(f"`{m}` recipe" for m in recipes) + " |",
        "|---|---|" + "---|" * len(recipes),
    ]
    for name, info in TrainingSpec.model_fields.items():
        if name == "augment":
            for aug, aug_info in AugmentSpec.model_fields.items():
                values = [r.get("augment", {}).get(aug, aug_info.default) for r in recipes.values()]
                lines.append(_recipe_row(f"augment.{aug}", aug_info.default, values))
            continue
        values = [r.get(name, info.default) for r in recipes.values()]
        lines.append(_recipe_row(name, info.default, values))
    left_out = sorted(
        {
            *(k for m in recipes for k in MODEL_RECIPES[m] if k not in TrainingSpec.model_fields),
            *(
                f"augment.{k}"
                for m in recipes
                for k in MODEL_RECIPES[m].get("augment", {})
                if k not in AugmentSpec.model_fields
            ),
        }
    )
    lines.append("")
    if left_out:
        lines += [
            "Recipe keys that a spec does not take are left out: "
            + ", ".join(f"`{k}`" for k in left_out)
            + " (the trainer's own default applies).",
            "",
        ]
    return lines


def _recipe_row(name: str, default: Any, values: list[Any]) -> str:
    cells = [f"`{name}`", f"`{inline(default)}`"]
    cells += [f"**`{inline(v)}`**" if v != default else f"`{inline(v)}`" for v in values]
    return "| " + " | ".join(cells) + " |"


# -- the example --------------------------------------------------------------------------------
def _example_section() -> list[str]:
    source = EXAMPLE_PATH.read_text(encoding="utf-8")
    spec = parse_spec(source, submission=True)  # what a user may submit
    dims = spec.search_space()
    config = example_trial_config(spec)
    return [
        f"## {EXAMPLE_HEADING}",
        "",
        f"`{EXAMPLE_PATH.relative_to(ROOT)}`, as a user writes it:",
        "",
        "```yaml",
        source.rstrip(),
        "```",
        "",
        "The same spec as parsed and stored: every field, with the defaults filled in, each "
        "annotated with its description. Submitting this text instead gives the same study.",
        "",
        "```yaml",
        *annotated_yaml(spec),
        "```",
        "",
        f"It searches {len(dims)} Optuna parameters: "
        + "; ".join(f"`{d.name}` {_dim_text(d)}" for d in dims)
        + f". Its budget is {trial_budget(spec)} trials"
        + (
            ", the first " + ", ".join(f"`{b}`" for b in spec.baselines) + " at its defaults"
            if spec.baselines
            else ""
        )
        + ("; each trains once" if spec.seeds == 1 else f"; each trains {spec.seeds} times")
        + ". One trial's resolved "
        "config (the `" + config["activation"]["family"] + "` family, each searched value at "
        "the middle of its range or the first choice):",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
    ]


# -- campaigns ----------------------------------------------------------------------------------
CAMPAIGNS = """\
## {heading}
A campaign ([campaigns.md](campaigns.md)) is a study spec, its *base*, plus `stages`: the body
of `POST /api/v1/campaigns`. Each stage is one study per model: the base with the stage's
fields replaced ([`stages`](#stages)). The first stage searches as a study does; the stage's
[`promote`](#stagespromote) rule picks the configurations that go on, and each later stage runs
exactly those (their Optuna params enqueued; a model or training value only where that stage
searches it), the baselines first at their defaults, with `seed` one past every seed an earlier
stage used, `repeats: reseed`, the random sampler and no pruner: its budget is their number.
Its trainings took no part in choosing the configurations, so its comparisons are on test
accuracy and say *better* or *worse* ([evidence.md](evidence.md)). Errors name the field where
the document wrote it: `stages.1.training.epochs`, `stages.2.model.1.name` (a transfer stage's
second model), `activations.smu.alpha` (the base's).
"""


def _campaign_section() -> list[str]:
    source = CAMPAIGN_EXAMPLE_PATH.read_text(encoding="utf-8")
    campaign = parse_campaign(source, submission=True)
    studies = []
    for index in range(campaign.stage_count):
        models = campaign.models(index)
        spec = parse_spec(campaign.study_spec(index, models[0]))
        names = ", ".join(f"`{inline(m)}`" for m in models)
        budget = f"{trial_budget(spec)} trials" if index == 0 else "the promoted configurations"
        studies.append(
            f"{index + 1}. `{campaign.label(index)}`: {names}, {spec.training.epochs} epoch(s), "
            f"{budget}, {spec.seeds} seed(s) each"
            + (
                f"; promotes `{inline(campaign.stages[index].promote)}`"
                if index + 1 < campaign.stage_count
                else ""
            )
        )
    return [
        CAMPAIGNS.format(heading=CAMPAIGN_HEADING),
        f"`{CAMPAIGN_EXAMPLE_PATH.relative_to(ROOT)}`:",
        "",
        "```yaml",
        source.rstrip(),
        "```",
        "",
        "Its stages, as the campaign builds their studies:",
        "",
        *studies,
        "",
    ]


def _dim_text(dim: SearchDim) -> str:
    dist = dim.dist
    if isinstance(dist, Choices):
        return "∈ {" + ", ".join(inline(c) for c in dist.choices) + "}"
    text = f"{dim.kind} in [{inline(dist.low)}, {inline(dist.high)}]"
    return text + (" log" if dist.log else "") + (f" step {dist.step}" if dist.step else "")


def example_trial_config(spec: StudySpec) -> dict[str, Any]:
    """suggest_config for the family with the most searched parameters, each at a middle value."""
    keys = spec.family_keys()
    by_family: dict[str, list[SearchDim]] = {k: [] for k in keys}
    shared: list[SearchDim] = []
    for dim in spec.search_space():
        prefix = dim.name.split(".", 1)[0]
        if prefix in by_family and dim.name != "activation":
            by_family[prefix].append(dim)
        elif dim.name != "activation":
            shared.append(dim)
    key = max(keys, key=lambda k: len(by_family[k]))
    params = {d.name: _middle(d) for d in [*shared, *by_family[key]]}
    if len(keys) > 1:
        params["activation"] = key
    return suggest_config(optuna.trial.FixedTrial(params), spec)


def _middle(dim: SearchDim) -> Any:
    dist = dim.dist
    if isinstance(dist, Choices):
        return dist.choices[0]
    assert isinstance(dist, Range)
    low, high = float(dist.low), float(dist.high)
    middle = math.sqrt(low * high) if dist.log else (low + high) / 2
    if dist.step is not None:
        middle = low + round((middle - low) / dist.step) * dist.step
    return round(middle) if dim.kind == "int" else float(f"{middle:.3g}")


def annotated_yaml(spec: StudySpec) -> list[str]:
    """The stored form of a spec as YAML lines, each field followed by its description."""
    return list(_yaml_lines(spec.model_dump(mode="json"), spec, StudySpec, 0))


def _yaml_lines(data: Mapping[str, Any], spec: StudySpec, model: Any, depth: int) -> Iterator[str]:
    indent = "  " * depth
    for name, value in data.items():
        info = model.model_fields.get(name) if model is not None else None
        comment = info.description if info is not None else None
        nested = _model_of(model, name)
        if nested is not None and isinstance(value, Mapping):
            yield f"{indent}{name}:" + (f"  # {comment}" if comment else "")
            yield from _yaml_lines(value, spec, nested, depth + 1)
        elif model is StudySpec and name == "activations":
            yield f"{indent}{name}:  # {comment}"
            for key, entry in value.items():
                yield f"{indent}  {key}:"
                for entry_name, entry_value in entry.items():
                    yield _entry_line(key, entry_name, entry_value, depth + 2)
        else:
            line = f"{indent}{name}: {inline(value)}"
            yield line + (f"  # {comment}" if comment else "")


def _model_of(model: Any, name: str) -> type[BaseModel] | None:
    """The pydantic model of a nested section field, if it is one."""
    info = model.model_fields.get(name) if model is not None else None
    annotation = getattr(info, "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _entry_line(key: str, name: str, value: Any, depth: int) -> str:
    line = f"{'  ' * depth}{name}: {inline(value)}"
    info = ActivationSpec.model_fields.get(name)
    if info is not None:
        return line + (f"  # {info.description}" if info.description else "")
    family = get_family(key)
    doc = family.params[name].doc if name in family.params else family.options[name].doc
    return f"{line}  # {family.name}: {doc}"


__all__ = [
    "DOC_PATH",
    "EXAMPLE_HEADING",
    "EXAMPLE_PATH",
    "SECTIONS",
    "anchor",
    "annotated_yaml",
    "example_trial_config",
    "inline",
    "render",
]
