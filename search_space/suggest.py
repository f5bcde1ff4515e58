"""From a study spec to Optuna: define-by-run suggestions, baselines, sampler and pruner.

Torch-free. Optuna parameter names: `activation` (categorical over the spec's family keys,
omitted when there is only one), `model.<field>`, `training.<field>`,
`training.augment.<field>`, and conditional `<family>.<name>` (e.g. `smu.alpha`,
`pau.init_target`, `opau.basis`, `smu.scope`). Fixed spec values are never Optuna parameters;
they go straight into the resolved trial config.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from typing import Any

import optuna

from search_space.registry import (
    DEFAULT_FIT_INTERVAL,
    DEFAULT_FIT_TARGET,
    get_family,
    resolve_settings,
)
from search_space.spec import (
    ActivationSpec,
    Choices,
    Range,
    SearchDim,
    SpecError,
    StudySpec,
    activation_dims,
    is_searched,
    option_or_param_domain,
)

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
    trial: TrialLike, prefix: str, section: Any, integer_fields: set[str]
) -> dict[str, Any]:
    out = {}
    for name in type(section).model_fields:
        value = getattr(section, name)
        if name == "augment":
            out[name] = _section(trial, f"{prefix}.augment", value, {"crop_padding"})
            continue
        out[name] = _suggest(trial, f"{prefix}.{name}", value, name in integer_fields)
    return out


_INT_TRAINING = {"epochs", "batch_size", "eval_batch_size"}


def suggest_activation(trial: TrialLike, key: str, entry: ActivationSpec) -> dict[str, Any]:
    """The resolved `activation` block for one family key, suggesting its searched values."""
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
    scope = _suggest(trial, f"{key}.scope", entry.scope, False) or family.default_scope
    preset = _suggest(trial, f"{key}.preset", entry.preset, False)
    init_target = _suggest(trial, f"{key}.init_target", entry.init_target, False)
    _, params, options, trainable = resolve_settings(
        key, given_params, given_options, entry.trainable, preset
    )
    init_interval = None
    if family.fit_init:
        preset_sets_coefficients = preset is not None and all(
            k in family.presets[preset] for k in family.coefficients
        )
        if init_target is None and not preset_sets_coefficients:
            init_target = DEFAULT_FIT_TARGET
        if init_target is not None:
            init_interval = list(entry.init_interval or DEFAULT_FIT_INTERVAL)
    return {
        "family": key,
        "params": params,
        "options": options,
        "scope": scope,
        "trainable": trainable,
        "preset": preset,
        "init_target": init_target,
        "init_interval": init_interval,
        "clamp": entry.clamp,
    }


def suggest_config(trial: TrialLike, spec: StudySpec) -> dict[str, Any]:
    """The resolved trial config (docs/architecture.md) for one trial; works with FixedTrial."""
    model = _section(trial, "model", spec.model, set())
    training = _section(trial, "training", spec.training, _INT_TRAINING)
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
        default = resolve_settings(key)[1].get(name, resolve_settings(key)[2].get(name))
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
    not among the choices). Model/training parameters are left to the sampler.
    """
    keys = spec.family_keys()
    out = []
    for key in spec.baselines:
        params: dict[str, Any] = {"activation": key} if len(keys) > 1 else {}
        for dim in activation_dims(key, spec.activations[key]):
            params[dim.name] = _default_for(key, dim)
        out.append(params)
    return out


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


# -- sampler and pruner ---------------------------------------------------------------------
def grid_search_space(spec: StudySpec) -> dict[str, list[Any]]:
    """Every searched parameter's values for optuna's GridSampler; continuous ones raise."""
    space: dict[str, list[Any]] = {}
    for dim in spec.search_space():
        dist = dim.dist
        if isinstance(dist, Choices):
            space[dim.name] = list(dist.choices)
        elif dim.kind == "int":
            space[dim.name] = list(range(int(dist.low), int(dist.high) + 1, int(dist.step or 1)))
        elif dist.step is not None:
            count = math.floor((dist.high - dist.low) / dist.step + 1e-9) + 1
            space[dim.name] = [round(dist.low + i * dist.step, 12) for i in range(count)]
        else:
            raise SpecError(
                [{"loc": "sampler.name", "msg": f"grid needs a step or choices for {dim.name}"}]
            )
    return space


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler the spec names (TPE defaults to constant_liar for parallel workers)."""
    s = spec.sampler
    if s.name == "tpe":
        with warnings.catch_warnings():
            # `group` (conditional spaces) is marked experimental; we opt in knowingly.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=s.seed,
                constant_liar=s.constant_liar,
                multivariate=s.multivariate,
                group=s.group,
                n_startup_trials=s.n_startup_trials,
            )
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise SpecError(
                [{"loc": "sampler.name", "msg": "cmaes needs the 'cmaes' package installed"}]
            )
        return optuna.samplers.CmaEsSampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
    if s.name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type=s.qmc_type, scramble=True, seed=s.seed)
    return optuna.samplers.GridSampler(grid_search_space(spec), seed=s.seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The Optuna pruner the spec names (steps are epochs)."""
    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials,
            n_warmup_steps=p.n_warmup_steps,
            interval_steps=p.interval_steps,
        )
    if p.name == "percentile":
        return optuna.pruners.PercentilePruner(
            p.percentile,
            n_startup_trials=p.n_startup_trials,
            n_warmup_steps=p.n_warmup_steps,
            interval_steps=p.interval_steps,
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1 if p.min_resource == "auto" else p.min_resource,
            max_resource=p.max_resource,
            reduction_factor=p.reduction_factor,
        )
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource,
            reduction_factor=p.reduction_factor,
            min_early_stopping_rate=p.min_early_stopping_rate,
        )
    return optuna.pruners.NopPruner()


__all__ = [
    "baseline_params",
    "config_family",
    "grid_search_space",
    "is_searched",
    "make_pruner",
    "make_sampler",
    "suggest_activation",
    "suggest_config",
]
