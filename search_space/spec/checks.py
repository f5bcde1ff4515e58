"""The spec's semantic checks: what pydantic's types cannot say about a spec's values.

Each check adds (location, message) pairs to an `Errors` collector; StudySpec runs them all and
raises them together. Checks marked "new spec's only" run for a submission (SUBMISSION): a stored
spec ran without them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from search_space.contract import DatasetConfig
from search_space.registry import FIT_TARGETS, Domain, Family, get_alias, get_family
from search_space.spec.dims import option_or_param_domain
from search_space.spec.limits import (
    CIFAR_TRAIN_IMAGES,
    ENTRY_KEYS,
    MLP_HEAD_MODELS,
    MULTI_OBJECTIVE_SAMPLERS,
)
from search_space.spec.search import ActivationSpec, PrunerSpec, SamplerSpec
from search_space.spec.sections import TRAINING_DOMAINS, DatasetSpec, TrainingSpec
from search_space.spec.values import (
    ANY_VALUE,
    Choices,
    Errors,
    Range,
    SearchDim,
    check_value,
    is_searched,
)
from search_space.spelling import did_you_mean


def check_section(
    errors: Errors, loc: tuple[str, ...], section: BaseModel, domains: Mapping[str, Domain]
) -> None:
    for name, domain in domains.items():
        value = getattr(section, name)
        if value is None and type(section).model_fields[name].default is None:
            continue  # a field whose null means off (training.grad_clip)
        for msg in check_value(value, domain):
            errors.add((*loc, name), msg)


def check_dataset_path(errors: Errors, dataset: DatasetSpec) -> None:
    """path only for folder datasets (a worker reads CIFAR from its --data, whatever path says)."""
    if dataset.name != "folder" and dataset.path is not None:
        errors.add(
            ("dataset", "path"),
            f"path is only for name: folder; {dataset.name} is read from where the worker's "
            f"--data (ACTSEARCH_DATA) points: {_leave_out('path')}, or use name: folder",
        )


def check_dataset(errors: Errors, dataset: DatasetSpec) -> None:
    """The contract's own checks of the section (a folder needs its path), and CIFAR's split
    within its 50,000 training images (the worker's split needs it)."""
    try:
        DatasetConfig.model_validate(dataset.model_dump())
    except ValidationError as error:
        for item in error.errors():
            errors.add(("dataset", *item["loc"]), str(item["msg"]).removeprefix("Value error, "))
        return
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


def check_unused(
    errors: Errors,
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


def check_objectives(
    errors: Errors, objectives: list[str], sampler: str, pruner: PrunerSpec
) -> None:
    """Accuracy first, then at most one cost; a cost needs a multi-objective sampler, no pruner.

    Optuna's `trial.report` (what pruning reads) refuses multi-objective trials, and CMA-ES
    optimises one value only.
    """
    if not objectives or objectives[0] != "accuracy":
        errors.add(("objectives",), "the first objective must be accuracy (maximised)")
        return
    costs = objectives[1:]
    if len(costs) > 1 or "accuracy" in costs:
        errors.add(
            ("objectives",),
            "give accuracy and at most one cost: [accuracy], [accuracy, step_time] or "
            "[accuracy, params]",
        )
        return
    if not costs:
        return
    if sampler not in MULTI_OBJECTIVE_SAMPLERS:
        errors.add(
            ("sampler", "name"),
            f"the {sampler} sampler optimises one objective only; with objectives "
            f"{objectives} use one of {', '.join(MULTI_OBJECTIVE_SAMPLERS)}",
        )
    if pruner.name != "none":
        errors.add(
            ("pruner", "name"),
            f"a multi-objective study cannot prune (Optuna reports one value per epoch): "
            f"set pruner: {{name: none}}, not {pruner.name}",
        )


def check_pruner(errors: Errors, pruner: PrunerSpec) -> None:
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


def _extremes(value: Any) -> list[Any]:
    """The smallest and largest values a fixed value or distribution gives (unchecked)."""
    if isinstance(value, Choices):
        return list(value.choices)
    return [value.low, value.high] if isinstance(value, Range) else [value]


def epochs_bounds(training: TrainingSpec) -> tuple[int, int] | None:
    """(fewest, most) epochs a trial can get; None when epochs itself is invalid (said so)."""
    valid = [
        int(e) for e in _extremes(training.epochs) if TRAINING_DOMAINS["epochs"].check(e) is None
    ]
    return (min(valid), max(valid)) if valid else None


def _epochs_text(training: TrainingSpec, epochs: int, which: str) -> str:
    """ "epochs (3)", or "epochs (3, the fewest a trial can get)" when epochs is searched."""
    searched = ", the " + which + " a trial can get" if is_searched(training.epochs) else ""
    return f"epochs ({epochs}{searched})"


def check_ema_start(errors: Errors, training: TrainingSpec) -> None:
    """ema.start_epoch must be below every epochs value a trial can get (the trainer's rule)."""
    bounds = epochs_bounds(training)
    if training.ema is None or bounds is None:
        return
    fewest, start = bounds[0], training.ema["start_epoch"]
    if start >= fewest:
        errors.add(
            ("training", "ema", "start_epoch"),
            f"start_epoch ({start}) must be below {_epochs_text(training, fewest, 'fewest')}, "
            f"or the average never starts; lower it or {_leave_out('ema')}",
        )


# -- warnings: valid specs whose settings contradict their budget (spec_warnings) -----------
Caution = tuple[tuple[str, ...], str]  # (location, message)


def _from_recipe(value: Any, recipe: Mapping[str, Any], key: str, model: Any) -> str:
    """ ", the proxy recipe's value" when a training value is the model recipe's."""
    return f", the {model} recipe's value" if key in recipe and recipe[key] == value else ""


def warmup_warning(training: TrainingSpec, recipe: Mapping[str, Any], model: Any) -> list[Caution]:
    """A warm-up at least as long as the training: the lr never reaches its peak, never decays."""
    bounds = epochs_bounds(training)
    numbers = [w for w in _extremes(training.warmup_epochs) if isinstance(w, (int, float))]
    if bounds is None or not numbers or max(numbers) < bounds[0]:
        return []
    longest = max(numbers)
    what = "up to " if is_searched(training.warmup_epochs) else ""
    note = _from_recipe(training.warmup_epochs, recipe, "warmup_epochs", model)
    return [
        (
            ("training", "warmup_epochs"),
            f"warmup_epochs ({what}{longest:g}{note}) is not below "
            f"{_epochs_text(training, bounds[0], 'fewest')}: the learning rate never reaches "
            "its peak and never decays; lower warmup_epochs or raise epochs",
        )
    ]


def lookahead_warning(
    training: TrainingSpec, recipe: Mapping[str, Any], model: Any
) -> list[Caution]:
    """A lookahead that starts at or after the last epoch never runs: it changes nothing."""
    bounds = epochs_bounds(training)
    if training.lookahead is None or bounds is None:
        return []
    start = training.lookahead["start_epoch"]
    if start < bounds[0]:
        return []
    note = _from_recipe(training.lookahead, recipe, "lookahead", model)
    return [
        (
            ("training", "lookahead", "start_epoch"),
            f"lookahead.start_epoch ({start}{note}) is not below "
            f"{_epochs_text(training, bounds[0], 'fewest')}: the lookahead never runs (epochs "
            "count from 0); lower lookahead.start_epoch, or set lookahead: null",
        )
    ]


def pruner_warning(training: TrainingSpec, pruner: PrunerSpec) -> list[Caution]:
    """A median/percentile pruner whose warm-up outlasts every trial never prunes."""
    bounds = epochs_bounds(training)
    if pruner.name not in ("median", "percentile") or bounds is None:
        return []
    if pruner.n_warmup_steps < bounds[1]:
        return []
    return [
        (
            ("pruner", "n_warmup_steps"),
            f"n_warmup_steps ({pruner.n_warmup_steps}) is not below "
            f"{_epochs_text(training, bounds[1], 'most')}: the {pruner.name} pruner never "
            "prunes; lower n_warmup_steps, or set pruner.name: none",
        )
    ]


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


def check_activation(errors: Errors, key: str, entry: ActivationSpec, model_name: Any) -> None:
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
            known = [*family.params, *family.options, *ENTRY_KEYS]
            hint = did_you_mean(name, known)
            errors.add(
                (*loc, name),
                f"{key} has no parameter or option {name!r}; "
                + (f"{hint} " if hint else "")
                + _entry_help(family),
            )
            continue
        try:
            value = ANY_VALUE.validate_python(extras[name])
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
        names = _choices_of(model_name)
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
    errors: Errors, loc: tuple[str, ...], entry: ActivationSpec, family: Family
) -> None:
    if entry.scope is None:
        return
    allowed = family.scopes
    domain = Domain("str", choices=tuple(allowed))
    for msg in check_value(entry.scope, domain):
        errors.add((*loc, "scope"), f"{msg} (scopes of {family.name}: {', '.join(allowed)})")


def _check_trainable(
    errors: Errors, loc: tuple[str, ...], key: str, entry: ActivationSpec, family: Family
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
        hint = did_you_mean(name, [*family.trainable_names, *family.params])
        errors.add(
            (*loc, "trainable", name),
            f"{key} has no trainable parameter {name!r}; "
            + (f"{hint} " if hint else "")
            + f"trainable: {', '.join(family.trainable_names) or 'none'}",
        )


def _check_preset_and_init(
    errors: Errors, loc: tuple[str, ...], entry: ActivationSpec, family: Family
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


def check_enqueue(
    errors: Errors, entries: list[dict[str, Any]], dims: list[SearchDim], sampler: str
) -> None:
    """Each enqueued configuration names searched parameters only, with values they can take."""
    if sampler == "grid":
        errors.add(("enqueue",), "the grid runs every configuration already; leave enqueue out")
        return
    by_name = {dim.name: dim for dim in dims}
    for i, entry in enumerate(entries):
        family = entry.get("activation")
        for name, value in entry.items():
            dim = by_name.get(name)
            if dim is None:
                searched = ", ".join(by_name) or "none"
                hint = did_you_mean(name, by_name)
                errors.add(
                    ("enqueue", i, name),
                    "not a searched parameter; "
                    + (f"{hint} " if hint else "")
                    + f"searched: {searched}",
                )
                continue
            owner = name.split(".", 1)[0]
            if family is not None and owner not in ("model", "training", "activation", family):
                errors.add(("enqueue", i, name), f"a parameter of {owner}, not of {family}")
            elif (why := _outside(dim, value)) is not None:
                errors.add(("enqueue", i, name), why)


def _outside(dim: SearchDim, value: Any) -> str | None:
    """Why a value is not one a dimension's distribution can give (None when it is)."""
    dist = dim.dist
    if isinstance(dist, Choices):
        ok = any(
            c == value and isinstance(c, bool) == isinstance(value, bool) for c in dist.choices
        )
        return None if ok else f"{value!r} is not one of the choices {dist.choices}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (dim.kind == "int" and not isinstance(value, int)):
        return f"expected {'an integer' if dim.kind == 'int' else 'a number'}, not {value!r}"
    if not dist.low <= value <= dist.high:
        return f"{value!r} is outside the range [{dist.low}, {dist.high}]"
    return None
