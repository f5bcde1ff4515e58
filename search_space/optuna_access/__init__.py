"""Every use of Optuna's private API, in one package: an Optuna upgrade is checked here.

Accessors for what Optuna keeps private but samplers and ask-and-tell workers need (a trial's
id, a study's storage and id); `create_running_trial` (a trial created RUNNING with fixed
parameters, for a retry); `tell_without_reread` (`Study.tell` without its final re-read); and
the cached storage a worker loads its studies with:

`Study.ask` first looks for enqueued (WAITING) trials, through
`get_all_trials(states=(WAITING,))`. Optuna's `_CachedStorage` answers every such call by first
re-reading each unfinished trial of the study with its five relations (seven statements, and with
16 workers some 16 running trials built into FrozenTrials), only to keep the few, usually none,
that wait. Here that one question goes to the database directly: one statement, and nothing
built when nothing waits. Every other read still goes through the cache (TPE and the pruners
read the whole study through it), and what is found is added to the cache the way Optuna's own
read adds it, so later writes to a popped trial find it there.

It also skips two re-reads of a trial this process already holds. `Study.ask` creates the trial
and at once reads it back (trial row plus five relations, six statements) to build the `Trial`;
the `FrozenTrial` the creation returned is handed over instead. `Study.tell` reads the trial
again for its state check and the sampler's `after_trial`; `known_trial` hands it the `Trial`'s
own up-to-date copy after one statement that reads the trial's state, so a trial finished
elsewhere (reaped) is still read in full and skipped exactly as Optuna skips it.

And it holds a worker's writes of a trial instead of committing each on its own (`holding_params`
until `release_writes`): the suggested parameters (Optuna commits each `suggest_*` alone, three
statements and a commit each), each reported value (`Trial.report`), and the trial's end
(`set_trial_state_values` as `tell` calls it, after its checks and the sampler's `after_trial`).
`held_writes(...).write(session)` writes them as Optuna's RDBStorage would, in bulk, inside a
caller's transaction: the worker's attach, epoch and outcome transactions (service.store.runs),
so a trial costs one commit per step instead of two, and a run's outcome and its trial's end
commit together. A parameter is still checked against the study's known distribution when it is
suggested, as Optuna checks it.

It remembers which trials an `ask` set running, so that an `ask` which fails part-way (the
sampler raises, or the database goes away while the `Trial` is built) can undo them
(`undo_started`): a fresh trial is failed, an enqueued one popped from the queue waits again.
Otherwise such a trial stays RUNNING for ever with no run behind it, and TPE's constant liar
keeps treating it as in flight.

It also keeps the pruner's read cheap: a read of the finished trials only (the pruners', each
epoch) loads just the trials that finished since the last read, not this worker's own running
trial with its five relations every time, and a trial this worker ended is cached as it wrote it.

Modules: `storage` (`WorkerStorage`, the cached storage), `held` (the held writes and the rows
they become), `private` (Optuna's private names, imported once). `_CachedStorage` is private to
Optuna; where it is missing the plain storage is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_space.optuna_access.held import HeldWrites
from search_space.optuna_access.private import _CachedStorage, _tell_with_warning
from search_space.optuna_access.storage import BATCH_PARAMS, HOLDING

if _CachedStorage is not None:
    from search_space.optuna_access.storage import WorkerStorage

_BATCH_PARAMS = BATCH_PARAMS  # module attributes: a test switches held writes off through them
_HOLDING = HOLDING

AnyTrial = optuna.trial.BaseTrial | FrozenTrial

__all__ = [
    "AnyTrial", "HeldWrites", "create_running_trial", "held_writes", "holding_params", "holds",
    "known_trial", "release_writes", "started_trials", "storage_of", "study_id_of",
    "tell_without_reread", "trial_id_of", "undo_started", "worker_storage", "write_held",
]  # fmt: skip


def trial_id_of(trial: AnyTrial) -> int:
    """The storage's id of a trial (Optuna keeps it private on Trial and FrozenTrial)."""
    return int(trial._trial_id)  # type: ignore[union-attr]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through (its cached wrapper, for a worker)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The storage's id of a study."""
    return int(study._study_id)


def create_running_trial(study: optuna.Study, system_attrs: dict[str, Any]) -> optuna.Trial:
    """A new RUNNING trial with these system attributes (e.g. "fixed_params": a retry's).

    Optuna's own mechanism for fixed parameters (what enqueue_trial uses) is the system
    attribute "fixed_params"; creating the trial RUNNING instead of WAITING keeps other
    workers' ask() from taking it. The study's own (cached) storage must create it, so that
    later writes through that cache know the trial.
    """
    template = FrozenTrial(
        number=-1,  # the storage numbers it
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs=system_attrs,
        intermediate_values={},
        trial_id=-1,
    )
    trial_id = storage_of(study).create_new_trial(study_id_of(study), template_trial=template)
    return optuna.Trial(study, trial_id)


def tell_without_reread(
    study: optuna.Study,
    trial: optuna.Trial,
    value: float | Sequence[float] | None,
    state: TrialState | None,
    *,
    verify: bool = True,
) -> None:
    """`study.tell(..., skip_if_finished=True)` without the re-read that builds its return value.

    `Study.tell` ends by loading the finished trial with its five relations again (six
    statements, about a tenth of a trial's bookkeeping) only to return a copy nobody here uses.
    `value` is one value, or one per objective for a multi-objective study.
    Its body, `_tell_with_warning`, does everything else: the state check, the sampler's
    `after_trial` and the write. Its read of the trial for the state check is served from the
    `Trial`'s own copy once the trial's state column says it still runs (`known_trial`). An
    Optuna without it gets the public call. `verify=False` skips even that read: for a trial
    whose writes are held (`holding_params`), whose end is written under the trial row's lock,
    where a trial finished meanwhile is left as it is (`HeldWrites.write`).
    """
    if _tell_with_warning is None:
        study.tell(trial, value, state=state, skip_if_finished=True)
        return
    with known_trial(study, trial, verify=verify):  # its state check: one column or none
        _tell_with_warning(
            study=study, trial=trial, value_or_values=value, state=state, skip_if_finished=True
        )


def worker_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """What a worker hands to `optuna.load_study`: the fast lookup where it applies."""
    if _CachedStorage is None or not isinstance(storage, optuna.storages.RDBStorage):
        return storage  # SQLite's and other storages are used as they are
    return WorkerStorage(storage)


@contextmanager
def known_trial(study: optuna.Study, trial: optuna.Trial, *, verify: bool = True) -> Iterator[None]:
    """Within the block, reading `trial` back costs one statement while it is still running
    (none without `verify`: the `Trial`'s own copy is taken as it is)."""
    storage = study._storage
    frozen = getattr(trial, "_cached_frozen_trial", None)
    if _CachedStorage is None or not isinstance(storage, WorkerStorage) or frozen is None:
        yield
        return
    storage.lend(frozen, verify=verify)
    try:
        yield
    finally:
        storage.forget(frozen._trial_id)


@contextmanager
def started_trials(study: optuna.Study) -> Iterator[list[tuple[int, bool]]]:
    """The trials set running within the block, as (trial id, was it enqueued (WAITING))."""
    started: list[tuple[int, bool]] = []
    storage = study._storage
    if _CachedStorage is None or not isinstance(storage, WorkerStorage):
        yield started  # nothing is tracked: a failed ask leaves its trial as Optuna does
        return
    storage.track(started)
    try:
        yield started
    finally:
        storage.track(None)


def undo_started(study: optuna.Study, started: list[tuple[int, bool]], reason: str) -> None:
    """Give back what a failed `ask` took: an enqueued trial waits again, a fresh one fails."""
    storage = study._storage
    for trial_id, was_waiting in started:
        if isinstance(storage, WorkerStorage):
            storage.forget(trial_id)
        try:
            if was_waiting:
                storage.set_trial_state_values(trial_id, TrialState.WAITING)
            else:
                storage.set_trial_system_attr(trial_id, "fail_reason", reason)
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished meanwhile (reaped): nothing left to undo


@contextmanager
def holding_params(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Within the block, and after it until `release_writes`, the trial's writes are held.

    Held writes (its suggested parameters, its reported values, its end as `tell` writes it)
    are stored by `write_held` in a transaction of their own, or by `held_writes(...).write`
    inside a caller's transaction. A block left by an exception drops the parameters it held
    (the trial is failed without them; its run records the parameters it got). Storages
    without the batch write write everything as Optuna does.
    """
    storage = study._storage
    if not _BATCH_PARAMS or not isinstance(storage, WorkerStorage):
        yield
        return
    storage.hold(trial_id_of(trial), getattr(trial, "_cached_frozen_trial", None))
    try:
        yield
    except BaseException:
        storage.drop_held_params(trial_id_of(trial))
        raise


def holds(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether the trial's writes are held (see `holding_params`)."""
    storage = study._storage
    return isinstance(storage, _HOLDING) and trial_id_of(trial) in cast(Any, storage)._held


def held_writes(study: optuna.Study, trial: optuna.Trial) -> HeldWrites | None:
    """What the trial's writes held now are, to be written inside a caller's transaction
    (None: nothing held, or a storage that holds nothing)."""
    storage = study._storage
    if not isinstance(storage, _HOLDING):
        return None
    return cast(Any, storage).held(trial_id_of(trial))


def write_held(study: optuna.Study, trial: optuna.Trial) -> None:
    """Store what is held of the trial, in one transaction (again after a failure: what is held
    stays held until it is stored, and a parameter stored already is not written twice)."""
    held = held_writes(study, trial)
    if held is not None:
        held.write_alone()


def release_writes(study: optuna.Study, trial: optuna.Trial) -> None:
    """Stop holding the trial's writes; what was never written is dropped (the run ended
    without a transaction to write it in: handed back, reaped, or its result dropped)."""
    storage = study._storage
    if isinstance(storage, _HOLDING):
        cast(Any, storage).release(trial_id_of(trial))
