"""From a study spec to Optuna: define-by-run suggestions and baselines.

Torch-free. Optuna parameter names: `activation` (categorical over the spec's family keys,
omitted when there is only one), `model.<field>`, `training.<field>`,
`training.augment.<field>`, and conditional `<family>.<name>` (e.g. `smu.alpha`,
`pau.init_target`, `opau.basis`, `smu.scope`). Fixed spec values are never Optuna parameters;
they go straight into the resolved trial config. The samplers and pruners are made in
search_space.samplers, the grid's in search_space.grid_sampler.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import optuna

from search_space.contract import ActivationConfig, TrialConfig, parse_trial_config
from search_space.contract.fields import ConfigModel, knob_of
from search_space.contract.training import AugmentConfig, TrainingConfig
from search_space.contract.trial import ModelConfig
from search_space.registry import DEFAULT_FIT_INTERVAL, DEFAULT_FIT_TARGET, get_family
from search_space.spec import (
    ActivationSpec,
    Choices,
    Range,
    SearchDim,
    StudySpec,
    activation_dims,
    grid_size,
    grid_values,
    is_shared_dim,
    model_training_defaults,
    option_or_param_domain,
    value_index,
)
from search_space.spec.sections import is_section_type

TrialLike = optuna.trial.BaseTrial


def _suggest(trial: TrialLike, name: str, value: Any, integer: bool) -> Any:
    """Fixed values pass through; distributions become trial.suggest_* calls."""
    if isinstance(value, Choices):
        return trial.suggest_categorical(name, value.choices)
    if isinstance(value, Range):
        if integer:
            return trial.suggest_int(
                name, int(value.low), int(value.high), step=int(value.step or 1), log=value.log
            )
        step = None if value.step is None else float(value.step)
        return trial.suggest_float(
            name, float(value.low), float(value.high), step=step, log=value.log
        )
    return value


def _section(
    trial: TrialLike, prefix: str, section: Any, config: type[ConfigModel]
) -> dict[str, Any]:
    """A spec section's values for one trial, in the contract's order (nested ones in place)."""
    out: dict[str, Any] = {}
    for name, info in config.model_fields.items():
        knob = knob_of(info)
        if knob is None or not knob.spec:
            continue  # the trainer's own option: its contract default applies
        value = getattr(section, name)
        if is_section_type(info.annotation):
            nested = cast(type[ConfigModel], info.annotation)
            out[name] = _section(trial, f"{prefix}.{name}", value, nested)
            continue
        value = _suggest(trial, f"{prefix}.{name}", value, info.annotation is int)
        # JSON's forms (betas' pair as a list), and no mapping shared with the spec.
        out[name] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
    return out


def suggest_activation(trial: TrialLike, key: str, entry: ActivationSpec) -> dict[str, Any]:
    """The resolved `activation` block for one family key, suggesting its searched values.

    The family is resolved once, by the contract's ActivationConfig: its defaults, preset and
    alias filled in, so the block states every value the trial trains with.
    """
    family = get_family(key)
    given_params: dict[str, float] = {}
    given_options: dict[str, str | int] = {}
    for name, value in entry.values().items():
        domain = option_or_param_domain(family, name)
        assert domain is not None  # the spec validated every key
        chosen = _suggest(trial, f"{key}.{name}", value, domain.kind == "int")
        if name in family.params:
            given_params[name] = float(chosen)
        else:
            given_options[name] = chosen
    preset = _suggest(trial, f"{key}.preset", entry.preset, False)
    config = ActivationConfig(
        family=key,
        params=given_params,
        options=given_options,
        scope=_suggest(trial, f"{key}.scope", entry.scope, False),
        trainable=entry.trainable,
        preset=preset,
        init_target=_suggest(trial, f"{key}.init_target", entry.init_target, False),
        init_interval=entry.init_interval,
        clamp=entry.clamp,
    )
    resolved = config.resolved
    init_target, init_interval = _fit_init(config)
    return {
        "family": key,
        "params": resolved.params,
        "options": resolved.options,
        "scope": resolved.scope,
        "trainable": resolved.trainable,
        "preset": preset,
        "init_target": init_target,
        "init_interval": init_interval,
        "clamp": entry.clamp,
    }


def _fit_init(config: ActivationConfig) -> tuple[str | None, list[float] | None]:
    """PAU/OPAU: the fit's target and interval, stated (unless a preset gives coefficients)."""
    family = config.resolved.family
    if not family.fit_init:
        return None, None
    preset = config.preset
    preset_sets_coefficients = preset is not None and all(
        k in family.presets[preset] for k in family.coefficients
    )
    init_target = config.init_target
    if init_target is None and not preset_sets_coefficients:
        init_target = DEFAULT_FIT_TARGET
    if init_target is None:
        return None, None
    return init_target, list(config.init_interval or DEFAULT_FIT_INTERVAL)


def suggest_config(trial: TrialLike, spec: StudySpec) -> dict[str, Any]:
    """The resolved trial config (docs/architecture.md) for one trial; works with FixedTrial."""
    model = _section(trial, "model", spec.model, ModelConfig)
    training = _section(trial, "training", spec.training, TrainingConfig)
    keys = spec.family_keys()
    key = trial.suggest_categorical("activation", keys) if len(keys) > 1 else keys[0]
    return {
        "dataset": spec.dataset.model_dump(mode="json"),
        "model": model,
        "training": training,
        "activation": suggest_activation(trial, str(key), spec.activations[str(key)]),
        "seed": spec.seed,
        "seeds": spec.seeds,
        "timeout_s": spec.timeouts.trial_s,
    }


def suggest_trial(trial: TrialLike, spec: StudySpec) -> TrialConfig:
    """`suggest_config` as the typed contract the worker trains."""
    return parse_trial_config(suggest_config(trial, spec))


# -- baselines ------------------------------------------------------------------------------
def _default_for(key: str, dim: SearchDim) -> Any:
    """The family default for one conditional parameter, moved inside the spec's range."""
    family = get_family(key)
    name = dim.name.split(".", 1)[1]
    if name == "scope":
        default: Any = family.default_scope
    elif name == "init_target":
        default = DEFAULT_FIT_TARGET
    elif name == "preset":
        default = None
    else:
        resolved = ActivationConfig(family=key).resolved
        default = resolved.params.get(name, resolved.options.get(name))
    return _inside(dim, default)


def _inside(dim: SearchDim, value: Any) -> Any:
    dist = dim.dist
    if isinstance(dist, Choices):
        return value if value in dist.choices else dist.choices[0]
    low, high = dist.low, dist.high
    clipped = min(max(float(value), float(low)), float(high))
    if dist.step is not None:
        clipped = low + round((clipped - low) / dist.step) * dist.step
        clipped = min(clipped, high)
    return round(clipped) if dim.kind == "int" else float(clipped)


def baseline_params(spec: StudySpec) -> list[dict[str, Any]]:
    """Params for `study.enqueue_trial`, one per baseline family, in order.

    Each pins `activation` and every conditional `<family>.*` parameter of that family to its
    registry default (clipped into the spec's range, or the first choice when the default is
    not among the choices). Model/training parameters are left to the sampler, except with the
    grid sampler: there a baseline pins every parameter of its configuration onto the grid
    (searched model/training fields at their spec defaults, or the nearest grid value), so it
    *is* one of the grid's configurations and the grid does not run it a second time.
    """
    keys = spec.family_keys()
    grid = spec.sampler.name == "grid"
    out = []
    for key in spec.baselines:
        params: dict[str, Any] = {}
        if grid:
            for dim in spec.search_space():
                if is_shared_dim(dim):
                    params[dim.name] = _nearest(grid_values(dim), _field_default(spec, dim.name))
        if len(keys) > 1:
            params["activation"] = key
        for dim in activation_dims(key, spec.activations[key]):
            default = _default_for(key, dim)
            params[dim.name] = _nearest(grid_values(dim), default) if grid else default
        out.append(params)
    return out


_SECTIONS: dict[str, type[ConfigModel]] = {
    "model": ModelConfig,
    "training": TrainingConfig,
    "training.augment": AugmentConfig,
}


def _field_default(spec: StudySpec, name: str) -> Any:
    """The spec's default for a model/training field, e.g. 0.1 for `training.lr` (1.5 when the
    model is the proxy: its recipe's)."""
    section, field = name.rsplit(".", 1)
    recipe = model_training_defaults(spec.model)
    given = {"training": recipe, "training.augment": recipe.get("augment", {})}.get(section, {})
    if field in given:
        return given[field]
    return _SECTIONS[section].model_fields[field].default


def _nearest(values: Sequence[Any], value: Any) -> Any:
    """`value` if it is on the grid, else the nearest number on it (else the first choice)."""
    try:
        return values[value_index(values, value)]
    except ValueError:
        pass
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(numbers, key=lambda v: abs(float(v) - float(value)))
    return values[0]


def config_family(params: dict[str, Any], spec: StudySpec | None = None) -> str:
    """The family key of a trial from its Optuna params (single-family specs need `spec`)."""
    if "activation" in params:
        return str(params["activation"])
    if spec is not None and len(spec.activations) == 1:
        return spec.family_keys()[0]
    prefixes = {name.split(".", 1)[0] for name in params if "." in name}
    families = sorted(prefixes - {"model", "training"})
    if len(families) == 1:
        return families[0]
    raise ValueError("cannot tell the family from these params; pass the study spec")


# -- grid ---------------------------------------------------------------------------------------
def trial_budget(spec: StudySpec) -> int:
    """How many trials the study runs: n_trials, or fewer when a grid has fewer configurations.

    A grid is searched exhaustively and then the study is complete: its budget is
    min(n_trials, grid size), baselines included (they are configurations of the grid).
    """
    if spec.sampler.name == "grid":
        return min(spec.n_trials, grid_size(spec))
    return spec.n_trials
