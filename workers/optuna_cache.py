"""Optuna's cached RDB storage as a worker uses it, with the enqueued-trial lookup made cheap.

`Study.ask` first looks for enqueued (WAITING) trials, through
`get_all_trials(states=(WAITING,))`. Optuna's `_CachedStorage` answers every such call by first
re-reading each unfinished trial of the study with its five relations (seven statements, and with
16 workers some 16 running trials built into FrozenTrials), only to keep the few, usually none,
that wait. Here that one question goes to the database directly: two statements, and nothing
built when nothing waits. Every other read still goes through the cache (TPE and the pruners
read the whole study through it), and what is found is added to the cache the way Optuna's own
read adds it, so later writes to a popped trial find it there.

`_CachedStorage` is private to Optuna; where it is missing the plain storage is used.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

try:
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
except ImportError:  # pragma: no cover - depends on the installed Optuna
    _CachedStorage = None  # type: ignore[assignment,misc]


def worker_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """What a worker hands to `optuna.load_study`: the fast lookup where it applies."""
    if _CachedStorage is None or not isinstance(storage, optuna.storages.RDBStorage):
        return storage  # SQLite's and other storages are used as they are
    return _WaitingLookupStorage(storage)


def _only_waiting(states: Container[TrialState] | None) -> bool:
    try:
        return states is not None and set(states) == {TrialState.WAITING}  # type: ignore[call-overload]
    except TypeError:  # a Container that cannot be iterated
        return False


if _CachedStorage is not None:

    class _WaitingLookupStorage(_CachedStorage):
        def get_all_trials(
            self,
            study_id: int,
            deepcopy: bool = True,
            states: Container[TrialState] | None = None,
        ) -> list[FrozenTrial]:
            if not _only_waiting(states):
                return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
            waiting = self._backend.get_all_trials(
                study_id, deepcopy=False, states=(TrialState.WAITING,)
            )
            if waiting:
                self._remember(study_id, waiting)
            return waiting

        def _remember(self, study_id: int, trials: list[FrozenTrial]) -> None:
            with self._lock:
                study: Any = self._studies.setdefault(study_id, _StudyInfo())
                self._add_trials_to_cache(study_id, trials)
                study.unfinished_trial_ids.update(t._trial_id for t in trials)
