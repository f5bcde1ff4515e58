"""Every use of Optuna's private API, in one module: an Optuna upgrade is checked here.

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

`_CachedStorage` is private to Optuna; where it is missing the plain storage is used.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import CursorResult, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

try:
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
    from optuna.storages._rdb import models as _models
    from optuna.storages._rdb.storage import _create_scoped_session
except ImportError:  # pragma: no cover - depends on the installed Optuna
    _CachedStorage = None  # type: ignore[assignment,misc]
try:  # Study.tell's body; see tell_without_reread
    from optuna.study._tell import _tell_with_warning
except ImportError:  # pragma: no cover - depends on the installed Optuna
    _tell_with_warning = None  # type: ignore[assignment]

AnyTrial = optuna.trial.BaseTrial | FrozenTrial
_HeldParam = tuple[str, float, BaseDistribution, BaseDistribution | None]


def _batch_params_supported() -> bool:
    """Whether this Optuna's RDBStorage writes a parameter inside a given session, taking the
    distribution known before (the call the cached storage makes, since Optuna 4)."""
    write = getattr(optuna.storages.RDBStorage, "_set_trial_param_without_commit", None)
    return write is not None and "previous_distribution" in inspect.signature(write).parameters


_BATCH_PARAMS = _CachedStorage is not None and _batch_params_supported()


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
    return _WaitingLookupStorage(storage)


@contextmanager
def known_trial(study: optuna.Study, trial: optuna.Trial, *, verify: bool = True) -> Iterator[None]:
    """Within the block, reading `trial` back costs one statement while it is still running
    (none without `verify`: the `Trial`'s own copy is taken as it is)."""
    storage = study._storage
    frozen = getattr(trial, "_cached_frozen_trial", None)
    if _CachedStorage is None or not isinstance(storage, _WaitingLookupStorage) or frozen is None:
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
    if _CachedStorage is None or not isinstance(storage, _WaitingLookupStorage):
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
        if isinstance(storage, _WaitingLookupStorage):
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
    if not _BATCH_PARAMS or not isinstance(storage, _WaitingLookupStorage):
        yield
        return
    storage.hold(trial_id_of(trial))
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


@dataclass
class _Held:
    """One trial's writes that this process holds (see `holding_params`)."""

    params: list[_HeldParam] = field(default_factory=list)
    steps: list[tuple[int, float]] = field(default_factory=list)  # reported (step, value)
    end: tuple[TrialState, list[float] | None] | None = None  # what `tell` writes


@dataclass(frozen=True)
class HeldWrites:
    """A snapshot of one trial's held writes: `write(session)` inside the caller's transaction,
    then `written()` once it committed. A transaction that rolled back leaves them held."""

    storage: Any
    trial_id: int
    params: tuple[_HeldParam, ...]
    steps: tuple[tuple[int, float], ...]
    end: tuple[TrialState, list[float] | None] | None

    @property
    def ends(self) -> bool:
        """Whether the trial's end (`tell`) is among them."""
        return self.end is not None

    def write(self, session: Session) -> None:
        """Write them with this session's connection, in its transaction (not committed here)."""
        self.storage.write_in(session, self)

    def written(self) -> None:
        """The transaction that wrote them committed: they are no longer held."""
        self.storage.written(self)

    def write_alone(self) -> None:
        """Write them in a transaction of their own."""
        backend: Any = self.storage._backend
        with _create_scoped_session(backend.scoped_session, True) as session:
            self.write(session)
        self.written()


def _only_waiting(states: Container[TrialState] | None) -> bool:
    try:
        return states is not None and set(states) == {TrialState.WAITING}  # type: ignore[call-overload]
    except TypeError:  # a Container that cannot be iterated
        return False


if _CachedStorage is not None:

    class _WaitingLookupStorage(_CachedStorage):
        def __init__(self, backend: optuna.storages.RDBStorage) -> None:
            super().__init__(backend)
            # trial id -> (the trial as this process knows it, whether to check it still runs)
            self._lent: dict[int, tuple[FrozenTrial, bool]] = {}
            self._started: list[tuple[int, bool]] | None = None  # see `started_trials`
            self._held: dict[int, _Held] = {}  # see `holding_params`

        def track(self, started: list[tuple[int, bool]] | None) -> None:
            self._started = started

        def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
            trial_id = super().create_new_trial(study_id, template_trial)
            if template_trial is None:  # a fresh RUNNING trial, which `ask` reads back at once
                created = self._cached(trial_id)
                if created is not None:
                    self.lend(copy.deepcopy(created), verify=False)
            running = template_trial is None or template_trial.state == TrialState.RUNNING
            if running and self._started is not None:
                self._started.append((trial_id, False))
            return trial_id

        def set_trial_state_values(
            self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
        ) -> bool:
            held = self._held.get(trial_id)
            if held is not None and state.is_finished():
                held.end = (state, None if values is None else [float(v) for v in values])
                return True  # written with the run's outcome (HeldWrites)
            if state == TrialState.RUNNING and values is None:
                changed = self._start_waiting(trial_id)
            else:
                changed = super().set_trial_state_values(trial_id, state, values)
            if changed and state == TrialState.RUNNING and self._started is not None:
                self._started.append((trial_id, True))  # only a WAITING trial can be set running
            return changed

        def hold(self, trial_id: int) -> None:
            self._held.setdefault(trial_id, _Held())

        def drop_held_params(self, trial_id: int) -> None:
            held = self._held.get(trial_id)
            if held is not None:
                held.params.clear()

        def release(self, trial_id: int) -> None:
            self._held.pop(trial_id, None)

        def held(self, trial_id: int) -> HeldWrites | None:
            held = self._held.get(trial_id)
            if held is None or not (held.params or held.steps or held.end):
                return None
            return HeldWrites(self, trial_id, tuple(held.params), tuple(held.steps), held.end)

        def set_trial_param(
            self,
            trial_id: int,
            param_name: str,
            param_value_internal: float,
            distribution: BaseDistribution,
        ) -> None:
            held = self._held.get(trial_id)
            if held is None:
                super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
                return
            with self._lock:
                study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
                known = self._studies[study_id].param_distribution.get(param_name)
            if known is not None:  # what Optuna checks before it writes
                check_distribution_compatibility(known, distribution)
            held.params.append((param_name, param_value_internal, distribution, known))

        def set_trial_intermediate_value(
            self, trial_id: int, step: int, intermediate_value: float
        ) -> None:
            held = self._held.get(trial_id)
            if held is None:
                super().set_trial_intermediate_value(trial_id, step, intermediate_value)
            else:
                held.steps.append((step, intermediate_value))

        def write_in(self, session: Session, writes: HeldWrites) -> None:
            """The rows Optuna's RDBStorage would write for these, in the session's transaction.

            Statements in bulk, not Optuna's ORM calls (a read of the trial per parameter and
            per value): one read of the trial's state (locked when its end is written), then
            one statement per table. Written again (a retry after a commit whose answer was
            lost) they change nothing. A trial already finished (reaped: its run was taken from
            this worker) gets none of them: Optuna would refuse them, and the run's own
            transaction must not fail for it (its run row says what happened). Reported values
            alone are written without that read: their caller (the epoch's transaction) writes
            them only while the run still runs under its row lock, and a reaper fails the trial
            only after it committed the run's end.
            """
            trials = _models.TrialModel.__table__
            if writes.params or writes.end is not None:
                read = select(trials.c.state).where(trials.c.trial_id == writes.trial_id)
                state = session.scalar(read.with_for_update() if writes.end is not None else read)
                if state is None or TrialState(state).is_finished():
                    return
            insert = (
                postgresql_insert
                if session.get_bind().dialect.name == "postgresql"
                else sqlite_insert
            )
            for statement in _held_rows(insert, writes):
                session.execute(statement)
            if writes.end is not None:
                end, _values = writes.end
                session.execute(
                    update(trials)
                    .where(trials.c.trial_id == writes.trial_id)
                    .values(
                        {
                            trials.c.state: end,
                            trials.c.datetime_complete: _stored_now("datetime_complete"),
                        }
                    )
                )

        def written(self, writes: HeldWrites) -> None:
            held = self._held.get(writes.trial_id)
            if held is None:
                return
            del held.params[: len(writes.params)]
            del held.steps[: len(writes.steps)]
            if writes.params:
                self._remember_distributions(writes.trial_id, writes.params)
            if writes.end is not None:
                self._held.pop(writes.trial_id, None)  # nothing follows a trial's end

        def _remember_distributions(self, trial_id: int, params: Sequence[_HeldParam]) -> None:
            with self._lock:
                study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
                known = self._studies[study_id].param_distribution
                for name, _value, distribution, _known in params:
                    known.setdefault(name, distribution)

        def get_trial(self, trial_id: int) -> FrozenTrial:
            with self._lock:
                lent = self._lent.pop(trial_id, None)
            if lent is not None:
                frozen, verify = lent
                if not verify or self._state(trial_id) == TrialState.RUNNING:
                    return frozen
            return super().get_trial(trial_id)

        def lend(self, frozen: FrozenTrial, *, verify: bool) -> None:
            """The next `get_trial` of this trial returns `frozen` (if `verify`: while it runs)."""
            with self._lock:
                self._lent[frozen._trial_id] = (frozen, verify)

        def forget(self, trial_id: int) -> None:
            with self._lock:
                self._lent.pop(trial_id, None)

        def _cached(self, trial_id: int) -> FrozenTrial | None:
            with self._lock:
                try:
                    study_id, number = self._trial_id_to_study_id_and_number[trial_id]
                    return self._studies[study_id].trials[number]
                except KeyError:
                    return None

        def _start_waiting(self, trial_id: int) -> bool:
            """WAITING -> RUNNING in one conditional UPDATE; False when it is not WAITING.

            Optuna reads the state, then writes it. On SQLite (no row locks; pysqlite reads
            outside a transaction) two workers can both read WAITING and both start one
            enqueued trial: one configuration trained twice, another never.
            """
            backend: Any = self._backend
            model = _models.TrialModel
            with _create_scoped_session(backend.scoped_session) as session:
                started = session.execute(
                    update(model)
                    .where(model.trial_id == trial_id, model.state == TrialState.WAITING)
                    .values(
                        {
                            model.__table__.c.state: TrialState.RUNNING,
                            model.__table__.c.datetime_start: _stored_now("datetime_start"),
                        }
                    )
                    .execution_options(synchronize_session=False)
                )
            return bool(cast(CursorResult[Any], started).rowcount)

        def _state(self, trial_id: int) -> TrialState | None:
            backend: Any = self._backend
            with _create_scoped_session(backend.scoped_session) as session:
                state: Any = session.scalar(
                    session.query(_models.TrialModel.state)
                    .filter(_models.TrialModel.trial_id == trial_id)
                    .statement
                )
            return cast(TrialState | None, state)

        def get_all_trials(
            self,
            study_id: int,
            deepcopy: bool = True,
            states: Container[TrialState] | None = None,
        ) -> list[FrozenTrial]:
            if not _only_waiting(states):
                return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
            if not self._any_waiting(study_id):
                return []
            waiting = self._backend.get_all_trials(
                study_id, deepcopy=False, states=(TrialState.WAITING,)
            )
            if waiting:
                self._remember(study_id, waiting)
            return waiting

        def _any_waiting(self, study_id: int) -> bool:
            """One indexed read (Optuna's own check of the study and its trial ids is two)."""
            backend: Any = self._backend
            model = _models.TrialModel
            with _create_scoped_session(backend.scoped_session) as session:
                found = session.scalar(
                    select(model.trial_id)
                    .where(model.study_id == study_id, model.state == TrialState.WAITING)
                    .limit(1)
                )
            return found is not None

        def _remember(self, study_id: int, trials: list[FrozenTrial]) -> None:
            with self._lock:
                study: Any = self._studies.setdefault(study_id, _StudyInfo())
                self._add_trials_to_cache(study_id, trials)
                study.unfinished_trial_ids.update(t._trial_id for t in trials)

    _HOLDING: tuple[type, ...] = (_WaitingLookupStorage,) if _BATCH_PARAMS else ()
else:  # pragma: no cover - depends on the installed Optuna
    _HOLDING = ()


def _held_rows(insert: Any, writes: HeldWrites) -> Iterator[Any]:
    """One multi-row INSERT per Optuna table that has rows among the held writes."""
    trial_id = writes.trial_id
    if writes.params:
        params = _models.TrialParamModel.__table__
        rows = [
            {"trial_id": trial_id, "param_name": name, "param_value": value,
             "distribution_json": optuna.distributions.distribution_to_json(distribution)}
            for name, value, distribution, _known in writes.params
        ]  # fmt: skip
        yield (
            insert(params)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[params.c.trial_id, params.c.param_name])
        )
    if writes.steps:
        model = _models.TrialIntermediateValueModel
        steps = model.__table__
        rows = []
        for step, value in dict(writes.steps).items():  # a step reported twice: the last value
            stored, step_kind = model.intermediate_value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                         "intermediate_value_type": step_kind})  # fmt: skip
        upsert = insert(steps).values(rows)
        yield upsert.on_conflict_do_update(
            index_elements=[steps.c.trial_id, steps.c.step],
            set_={
                name: upsert.excluded[name]
                for name in ("intermediate_value", "intermediate_value_type")
            },
        )
    _state, values = writes.end or (None, None)
    if values:
        model_values = _models.TrialValueModel
        table = model_values.__table__
        rows = []
        for objective, value in enumerate(values):
            stored, kind = model_values.value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "objective": objective, "value": stored,
                         "value_type": kind})  # fmt: skip
        upsert = insert(table).values(rows)
        yield upsert.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.objective],
            set_={name: upsert.excluded[name] for name in ("value", "value_type")},
        )


def _stored_now(column: str) -> datetime:
    """`datetime.now()` as Optuna's trial model stores it in `column` (datetime_start or
    datetime_complete: local time up to Optuna 4, naive UTC since 5), for a statement that
    writes the column directly: set on a model object, read back from the column's attribute."""
    model = _models.TrialModel
    probe = model()
    setattr(probe, column, datetime.now())
    mapped = sa_inspect(model).get_property_by_column(model.__table__.c[column])
    return cast(datetime, getattr(probe, mapped.key))
