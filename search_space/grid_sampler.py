"""The grid sampler: every distinct configuration of a spec once, across ask-and-tell workers.

Unlike a plain product over every parameter (Optuna's GridSampler), a family's own parameters
vary only within that family's configurations: relu is not trained once per value of
smu.alpha.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from search_space.optuna_access import storage_of, study_id_of, trial_id_of
from search_space.spec import (
    SpecError,
    StudySpec,
    activation_dims,
    grid_values,
    is_shared_dim,
    value_index,
)

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


def grid_search_space(spec: StudySpec) -> dict[str, list[Any]]:
    """Every searched parameter's grid values (continuous ones raise SpecError)."""
    space: dict[str, list[Any]] = {}
    for dim in spec.search_space():
        try:
            space[dim.name] = grid_values(dim)
        except ValueError as error:
            raise SpecError([{"loc": "sampler.name", "msg": str(error)}]) from error
    return space


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
                    choices.append([value_index(values, fixed[name])])
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
            storage_of(study).set_trial_system_attr(trial_id_of(trial), GRID_POINT_ATTR, index)
        self._chosen[trial_id_of(trial)] = int(index)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The value of `param_name` in the trial's configuration."""
        index = self._chosen.get(trial_id_of(trial), trial.system_attrs.get(GRID_POINT_ATTR))
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
        self._chosen.pop(trial_id_of(trial), None)

    def is_exhausted(self, study: optuna.Study) -> bool:
        """Whether every configuration has a finished trial."""
        return len(self._taken(study, finished_only=True)) >= self.grid.size

    def _taken(self, study: optuna.Study, *, finished_only: bool = False) -> set[int]:
        """Configurations of finished and running trials (and of waiting enqueued ones)."""
        taken: set[int] = set()
        # The storage, not `study`: pruners hand samplers a filtered view of the trials.
        for t in storage_of(study).get_all_trials(study_id_of(study), deepcopy=False):
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
