"""From a study spec to Optuna: define-by-run suggestions, baselines, sampler and pruner.

Torch-free. Optuna parameter names: `activation` (categorical over the spec's family keys,
omitted when there is only one), `model.<field>`, `training.<field>`,
`training.augment.<field>`, and conditional `<family>.<name>` (e.g. `smu.alpha`,
`pau.init_target`, `opau.basis`, `smu.scope`). Fixed spec values are never Optuna parameters;
they go straight into the resolved trial config.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import math
import random
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from search_space.registry import (
    DEFAULT_FIT_INTERVAL,
    DEFAULT_FIT_TARGET,
    get_family,
    resolve_settings,
)
from search_space.spec import (
    ActivationSpec,
    AugmentSpec,
    Choices,
    ModelSpec,
    Range,
    SearchDim,
    SpecError,
    StudySpec,
    TrainingSpec,
    activation_dims,
    grid_size,
    grid_values,
    is_searched,
    is_shared_dim,
    model_training_defaults,
    option_or_param_domain,
)

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

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
    out: dict[str, Any] = {}
    for name in type(section).model_fields:
        value = getattr(section, name)
        if name == "augment":
            out[name] = _section(trial, f"{prefix}.augment", value, {"crop_padding"})
            continue
        value = _suggest(trial, f"{prefix}.{name}", value, name in integer_fields)
        # JSON's forms (betas' pair as a list), and no mapping shared with the spec.
        out[name] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
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


_SECTIONS: dict[str, type[Any]] = {
    "model": ModelSpec,
    "training": TrainingSpec,
    "training.augment": AugmentSpec,
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
        return values[_value_index(values, value)]
    except ValueError:
        pass
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(numbers, key=lambda v: abs(float(v) - float(value)))
    return values[0]


def _value_index(values: Sequence[Any], value: Any) -> int:
    """Position of `value` among grid values (1 == 1.0, but True is not 1); ValueError if absent."""
    for i, candidate in enumerate(values):
        if candidate == value and isinstance(candidate, bool) == isinstance(value, bool):
            return i
    raise ValueError(f"{value!r} is not on the grid")


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
def grid_search_space(spec: StudySpec) -> dict[str, list[Any]]:
    """Every searched parameter's grid values (continuous ones raise SpecError)."""
    space: dict[str, list[Any]] = {}
    for dim in spec.search_space():
        try:
            space[dim.name] = grid_values(dim)
        except ValueError as error:
            raise SpecError([{"loc": "sampler.name", "msg": str(error)}]) from error
    return space


def trial_budget(spec: StudySpec) -> int:
    """How many trials the study runs: n_trials, or fewer when a grid has fewer configurations.

    A grid is searched exhaustively and then the study is complete: its budget is
    min(n_trials, grid size), baselines included (they are configurations of the grid).
    """
    if spec.sampler.name == "grid":
        return min(spec.n_trials, grid_size(spec))
    return spec.n_trials


@dataclass(frozen=True)
class _Branch:
    """One family's block of the grid: configurations offset .. offset + size - 1."""

    fixed: dict[str, Any]  # {"activation": key} when the spec has several families
    names: tuple[str, ...]  # searched parameters of this family's configurations
    values: tuple[list[Any], ...]
    offset: int
    size: int

    def point(self, local: int) -> dict[str, Any]:
        """The params of configuration `local` of this block (mixed radix, last name fastest)."""
        out = dict(self.fixed)
        for name, values in zip(reversed(self.names), reversed(self.values), strict=True):
            local, i = divmod(local, len(values))
            out[name] = values[i]
        return out

    def matching(self, fixed: Mapping[str, Any]) -> Iterator[int] | None:
        """Global indices of this block's configurations that agree with `fixed`, lazily.

        None when `fixed` rules the block out (another family, or a value not on the grid).
        Fixed names that are not this block's parameters are ignored: they are never suggested.
        """
        if any(fixed[k] != v for k, v in self.fixed.items() if k in fixed):
            return None
        choices: list[range | list[int]] = []
        for name, values in zip(self.names, self.values, strict=True):
            if name in fixed:
                try:
                    choices.append([_value_index(values, fixed[name])])
                except ValueError:
                    return None
            else:
                choices.append(range(len(values)))
        radices = [len(v) for v in self.values]

        def indices() -> Iterator[int]:
            for digits in itertools.product(*choices):
                local = 0
                for digit, radix in zip(digits, radices, strict=True):
                    local = local * radix + digit
                yield self.offset + local

        return indices()


class SpecGrid:
    """The distinct configurations of a grid study, indexed 0 .. size - 1 without listing them.

    Unlike a plain product over every parameter (Optuna's GridSampler), a family's own
    parameters vary only within that family's configurations: relu is not trained once per
    value of smu.alpha.
    """

    def __init__(self, spec: StudySpec) -> None:
        space = grid_search_space(spec)
        dims = spec.search_space()
        shared = [d.name for d in dims if is_shared_dim(d)]
        keys = spec.family_keys()
        self.branches: list[_Branch] = []
        offset = 0
        for key in keys:
            names = [*shared, *(d.name for d in activation_dims(key, spec.activations[key]))]
            values = tuple(space[name] for name in names)
            size = math.prod(len(v) for v in values)
            fixed = {"activation": key} if len(keys) > 1 else {}
            self.branches.append(_Branch(fixed, tuple(names), values, offset, size))
            offset += size
        self.size = offset

    def point(self, index: int) -> dict[str, Any]:
        """The Optuna params of configuration `index`."""
        for branch in self.branches:
            if index < branch.offset + branch.size:
                return branch.point(index - branch.offset)
        raise IndexError(f"the grid has {self.size} configurations, not {index + 1}")

    def matching(self, fixed: Mapping[str, Any]) -> Iterator[int]:
        """Indices of the configurations that agree with the fixed params (lazily)."""
        found = (branch.matching(fixed) for branch in self.branches)
        return itertools.chain.from_iterable(i for i in found if i is not None)

    def index_of(self, params: Mapping[str, Any]) -> int | None:
        """The configuration a trial's params pin down completely, if they do."""
        for branch in self.branches:
            if all(name in params for name in branch.names):
                found = branch.matching(params)
                if found is not None:
                    return next(found, None)
        return None

    def spread(self, number: int) -> int:
        """Configuration for trial `number`: a fixed permutation that spreads consecutive numbers.

        Every worker process computes the same one (trial numbers are unique), so workers asking
        at the same time take different configurations; a golden-ratio stride spreads a budget
        smaller than the grid over all of it.
        """
        stride = max(1, round(self.size * 0.6180339887))
        while math.gcd(stride, self.size) != 1:
            stride += 1
        return (number * stride) % self.size


GRID_POINT_ATTR = "actsearch_grid_point"


class SpecGridSampler(optuna.samplers.BaseSampler):
    """Exhaustive search over a spec's distinct configurations, for ask-and-tell workers.

    Each new trial takes a configuration no finished or running trial has (enqueued trials,
    baselines and retries take the one their fixed params agree with), so the grid is covered
    once. It never calls `study.stop()`: the study's budget (`trial_budget`) ends it, and
    Optuna's GridSampler raising from `stop()` outside `optimize()` made every last `tell` fail.
    `seed` only breaks ties (which free configuration, when the preferred one is taken).
    """

    def __init__(self, spec: StudySpec, seed: int | None = None) -> None:
        self.grid = SpecGrid(spec)
        self._rng = random.Random(seed)
        self._chosen: dict[int, int] = {}  # trial id -> configuration, for this process's trials

    def reseed_rng(self) -> None:
        """New randomness for tie-breaking (Optuna calls this in forked workers)."""
        self._rng.seed()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """No relative sampling: every value comes from the trial's configuration."""
        return {}

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        """No relative sampling."""
        return {}

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Give the trial its configuration (stored as a system attribute all workers read)."""
        fixed = dict(trial.system_attrs.get("fixed_params") or {})
        index = trial.system_attrs.get(GRID_POINT_ATTR)
        if index is None:
            index = self._choose(study, trial.number, fixed)
            if index is None:
                return  # fixed params off the grid: sample_independent says which
            study._storage.set_trial_system_attr(trial._trial_id, GRID_POINT_ATTR, index)
        self._chosen[trial._trial_id] = int(index)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The value of `param_name` in the trial's configuration."""
        index = self._chosen.get(trial._trial_id, trial.system_attrs.get(GRID_POINT_ATTR))
        if index is None:
            fixed = trial.system_attrs.get("fixed_params")
            raise ValueError(
                f"no grid configuration agrees with this trial's fixed parameters {fixed}; "
                f"cannot choose {param_name}"
            )
        point = self.grid.point(int(index))
        if param_name not in point:
            raise ValueError(f"{param_name} is not a parameter of grid configuration {point}")
        return point[param_name]

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Forget the trial; the budget, not study.stop(), ends a grid study."""
        self._chosen.pop(trial._trial_id, None)

    def is_exhausted(self, study: optuna.Study) -> bool:
        """Whether every configuration has a finished trial."""
        return len(self._taken(study, finished_only=True)) >= self.grid.size

    def _taken(self, study: optuna.Study, *, finished_only: bool = False) -> set[int]:
        """Configurations of finished and running trials (and of waiting enqueued ones)."""
        taken: set[int] = set()
        # The storage, not `study`: pruners hand samplers a filtered view of the trials.
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if finished_only and not t.state.is_finished():
                continue
            index = t.system_attrs.get(GRID_POINT_ATTR)
            if index is None:  # not started yet, or made before this sampler: read its params
                index = self.grid.index_of({**t.system_attrs.get("fixed_params", {}), **t.params})
            if index is not None:
                taken.add(int(index))
        return taken

    def _choose(self, study: optuna.Study, number: int, fixed: dict[str, Any]) -> int | None:
        taken = self._taken(study)
        if not fixed:
            preferred = self.grid.spread(number)
            if preferred not in taken:
                return preferred
        # Free configurations agreeing with the fixed params; up to 64 random tries first, which
        # is enough unless most of the grid is taken, then a scan.
        candidates = self.grid.matching(fixed) if fixed else None
        if candidates is None:
            for _ in range(64):
                index = self._rng.randrange(self.grid.size)
                if index not in taken:
                    return index
            candidates = iter(range(self.grid.size))
        free: list[int] = []
        first: int | None = None
        for index in candidates:
            first = index if first is None else first
            if index not in taken:
                free.append(index)
        if free:
            return self._rng.choice(free)
        # Everything is taken (a retry, or more trials than configurations): a repeat, the one
        # the fixed params name when they name one.
        if first is None:
            return None
        return first if fixed else self._rng.randrange(self.grid.size)


class PerTrialSeedSampler(optuna.samplers.BaseSampler):
    """A seeded sampler whose randomness for trial n is drawn from (seed, n).

    Every worker process has its own sampler object, and a study is reloaded now and then, so one
    seeded random stream per process would either repeat itself in every process (the same
    proposals everywhere) or have to be offset at random (a seed that reproduces nothing). Keyed by
    the trial number instead, trial n gets the same draws whichever process asks for it: a study
    run again with the same seed and the same history proposes the same parameters, and
    concurrent trials never share a stream. What a sampler learns from the history (TPE's
    densities) still comes from the study's trials.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = seed
        self._default = make(seed)
        self._by_trial: dict[int, optuna.samplers.BaseSampler] = {}  # trial id -> its sampler

    def _of(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.BaseSampler:
        return self._by_trial.get(trial._trial_id, self._default)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Give trial n its own sampler, seeded from (seed, n)."""
        key = zlib.crc32(f"{self._seed}:{trial.number}".encode()) & 0x7FFFFFFF
        sampler = self._by_trial[trial._trial_id] = self._make(key)
        sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The trial's own sampler's."""
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        """The trial's own sampler's."""
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The trial's own sampler's."""
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """The trial's own sampler's; then it is forgotten."""
        self._by_trial.pop(trial._trial_id, self._default).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: the randomness belongs to the trial numbers."""


# -- sampler and pruner ---------------------------------------------------------------------
# The Python packages a sampler needs beyond Optuna, as (module imported, package installed).
# Optuna imports them lazily, at the sampler's first model-based proposal (CMA-ES's after its
# start-up trials, QMC's from a study's second trial on), that is in the middle of a trial;
# make_sampler imports them up front instead, before any trial exists.
SAMPLER_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "cmaes": (("cmaes", "cmaes"),),
    "qmc": (("scipy.stats.qmc", "scipy"),),
}


class MissingPackage(ModuleNotFoundError):
    """This machine lacks a Python package the study's sampler needs; other machines may not."""

    def __init__(self, package: str, needed_by: str, detail: str) -> None:
        super().__init__(
            f"this machine lacks the Python package {package!r} that the {needed_by} needs: "
            f"pip install {package} ({detail})",
            name=package,
        )
        self.package = package


def require_packages(sampler: str) -> None:
    """Import what the named sampler needs; MissingPackage when this machine lacks it."""
    for module, package in SAMPLER_PACKAGES.get(sampler, ()):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise MissingPackage(
                package, f"{sampler} sampler", f"import {module}: {error}"
            ) from error


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler the spec names (TPE defaults to constant_liar for parallel workers).

    A seeded TPE or random sampler draws per trial number (PerTrialSeedSampler). Raises
    MissingPackage when this machine lacks a package the sampler needs (SAMPLER_PACKAGES).
    """
    s = spec.sampler
    require_packages(s.name)
    if s.name == "tpe":

        def tpe(seed: int | None) -> optuna.samplers.BaseSampler:
            with warnings.catch_warnings():
                # `group` (conditional spaces) is marked experimental; we opt in knowingly.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(
                    seed=seed,
                    constant_liar=s.constant_liar,
                    multivariate=s.multivariate,
                    group=s.group,
                    n_startup_trials=s.n_startup_trials,
                )

        return tpe(None) if s.seed is None else PerTrialSeedSampler(tpe, s.seed)
    if s.name == "random":
        if s.seed is None:
            return optuna.samplers.RandomSampler()
        return PerTrialSeedSampler(lambda seed: optuna.samplers.RandomSampler(seed=seed), s.seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
    if s.name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type=s.qmc_type, scramble=True, seed=s.seed)
    return SpecGridSampler(spec, seed=s.seed)


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
    "SAMPLER_PACKAGES",
    "MissingPackage",
    "SpecGrid",
    "SpecGridSampler",
    "baseline_params",
    "config_family",
    "grid_search_space",
    "is_searched",
    "make_pruner",
    "make_sampler",
    "require_packages",
    "suggest_activation",
    "suggest_config",
    "trial_budget",
]
