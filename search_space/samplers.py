"""The Optuna sampler and pruner a spec names, made for ask-and-tell workers.

A seeded TPE or random sampler draws per trial number (PerTrialSeedSampler), so every worker
process proposes what any other would for the same trial; the grid is search_space.grid_sampler.
"""

from __future__ import annotations

import importlib
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from search_space.grid_sampler import SpecGridSampler
from search_space.optuna_access import trial_id_of
from search_space.spec import StudySpec

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


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
        return self._by_trial.get(trial_id_of(trial), self._default)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Give trial n its own sampler, seeded from (seed, n)."""
        key = zlib.crc32(f"{self._seed}:{trial.number}".encode()) & 0x7FFFFFFF
        sampler = self._by_trial[trial_id_of(trial)] = self._make(key)
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
        self._by_trial.pop(trial_id_of(trial), self._default).after_trial(
            study, trial, state, values
        )

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
    if s.name == "nsga2":  # its seed is offset per worker process, as CMA-ES's
        return optuna.samplers.NSGAIISampler(seed=s.seed)
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
