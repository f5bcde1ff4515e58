"""The storage a worker loads its studies with (see the package's docstring for what it skips
and what it holds)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import CursorResult, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from search_space.optuna_access.held import Held, HeldParam, HeldWrites, held_rows, stored_now
from search_space.optuna_access.private import (
    _CachedStorage,
    _create_scoped_session,
    _models,
    _StudyInfo,
)


def _batch_params_supported() -> bool:
    """Whether this Optuna's RDBStorage writes a parameter inside a given session, taking the
    distribution known before (the call the cached storage makes, since Optuna 4)."""
    write = getattr(optuna.storages.RDBStorage, "_set_trial_param_without_commit", None)
    return write is not None and "previous_distribution" in inspect.signature(write).parameters


BATCH_PARAMS = _CachedStorage is not None and _batch_params_supported()

# write_in's reads and writes of a trial row, built once (see held._statement).
_TRIALS = _models.TrialModel.__table__
_STATE = select(_TRIALS.c.state).where(_TRIALS.c.trial_id == bindparam("b_trial"))
_STATE_FOR_UPDATE = _STATE.with_for_update()
_END = (
    update(_TRIALS)
    .where(_TRIALS.c.trial_id == bindparam("b_trial"))
    .values(
        {
            _TRIALS.c.state: bindparam("b_state", type_=_TRIALS.c.state.type),
            _TRIALS.c.datetime_complete: bindparam(
                "b_complete", type_=_TRIALS.c.datetime_complete.type
            ),
        }
    )
)


def _only_finished(states: Container[TrialState] | None) -> bool:
    """Whether a read asks for finished trials only (the pruners' read of COMPLETE trials)."""
    try:
        return states is not None and all(s.is_finished() for s in states)  # type: ignore[attr-defined]
    except TypeError:  # a Container that cannot be iterated
        return False


def _only_waiting(states: Container[TrialState] | None) -> bool:
    try:
        return states is not None and set(states) == {TrialState.WAITING}  # type: ignore[call-overload]
    except TypeError:  # a Container that cannot be iterated
        return False


if _CachedStorage is not None:

    class WorkerStorage(_CachedStorage):
        def __init__(self, backend: optuna.storages.RDBStorage) -> None:
            super().__init__(backend)
            # trial id -> (the trial as this process knows it, whether to check it still runs)
            self._lent: dict[int, tuple[FrozenTrial, bool]] = {}
            self._started: list[tuple[int, bool]] | None = None  # see `started_trials`
            self._held: dict[int, Held] = {}  # see `holding_params`

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

        def hold(self, trial_id: int, frozen: FrozenTrial | None = None) -> None:
            self._held.setdefault(trial_id, Held(frozen=frozen))

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

        def write_in(self, session: Session, writes: HeldWrites) -> bool:
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
            trial = {"b_trial": writes.trial_id}
            if writes.params or writes.end is not None:
                read = _STATE_FOR_UPDATE if writes.end is not None else _STATE
                state = session.scalar(read, trial)
                if state is None or TrialState(state).is_finished():
                    return False
            insert = (
                postgresql_insert
                if session.get_bind().dialect.name == "postgresql"
                else sqlite_insert
            )
            for statement, rows in held_rows(insert, writes):
                session.execute(statement, rows)
            if writes.end is not None:
                end, _values = writes.end
                ended = {"b_state": end, "b_complete": stored_now("datetime_complete")}
                session.execute(_END, {**trial, **ended})
            return True

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
                if writes.ended_here and writes.ended_here[0] and held.frozen is not None:
                    self._cache_ended(held.frozen, *writes.end)

        def _cache_ended(
            self, frozen: FrozenTrial, state: TrialState, values: list[float] | None
        ) -> None:
            """The trial as this process just ended it, in the cache: a later read of the
            study's finished trials (the pruner's, each epoch) need not load it back."""
            ended = copy.deepcopy(frozen)
            ended.state, ended.values, ended.datetime_complete = state, values, datetime.now()
            with self._lock:
                study_id, _ = self._trial_id_to_study_id_and_number[ended._trial_id]
                self._add_trials_to_cache(study_id, [ended])
                self._studies[study_id].unfinished_trial_ids.discard(ended._trial_id)

        def _remember_distributions(self, trial_id: int, params: Sequence[HeldParam]) -> None:
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
                            model.__table__.c.datetime_start: stored_now("datetime_start"),
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
            if _only_finished(states) and self._refresh_finished(study_id):
                return self._cached_trials(study_id, deepcopy, cast(Container[TrialState], states))
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

        def _refresh_finished(self, study_id: int) -> bool:
            """Bring the cache's finished trials up to date, loading only trials that finished
            since it last looked and that it does not hold finished already; False when the
            study was never read (the full read builds the cache first).

            Optuna's refresh loads every unfinished trial and every trial newer than the last
            finished one, with its five relations, at every read: the pruner's read of the
            finished trials each epoch loaded this worker's own running trial back (six
            statements). One statement lists which of those trials finished; running ones are
            only remembered as unfinished (the next full read loads them, as Optuna would).
            """
            with self._lock:
                study = self._studies.get(study_id)
                if study is None or study.last_finished_trial_id < 0:
                    return False
                unfinished = set(study.unfinished_trial_ids)
                last = study.last_finished_trial_id
            rows = self._states_since(study_id, unfinished, last)
            finished = {trial_id for trial_id, state in rows if state.is_finished()}
            cached = {  # (`_cached` takes the lock)
                trial_id
                for trial_id in finished
                if (trial := self._cached(trial_id)) is not None and trial.state.is_finished()
            }
            loaded = self._load(study_id, finished - cached)
            with self._lock:
                if loaded:
                    self._add_trials_to_cache(study_id, loaded)
                for trial_id, state in rows:  # every trial newer than `last` is now known
                    if state.is_finished():
                        study.unfinished_trial_ids.discard(trial_id)
                    else:
                        study.unfinished_trial_ids.add(trial_id)
                newest = max((trial_id for trial_id, _ in rows), default=last)
                study.last_finished_trial_id = max(study.last_finished_trial_id, newest)
            return True

        def _states_since(
            self, study_id: int, unfinished: set[int], last: int
        ) -> list[tuple[int, TrialState]]:
            """(id, state) of the study's unfinished trials and of those newer than `last`."""
            trials = _models.TrialModel.__table__
            newer = trials.c.trial_id > last
            where = or_(trials.c.trial_id.in_(unfinished), newer) if unfinished else newer
            backend: Any = self._backend
            with _create_scoped_session(backend.scoped_session) as session:
                found = session.execute(
                    select(trials.c.trial_id, trials.c.state).where(
                        trials.c.study_id == study_id, where
                    )
                ).all()
            return [(int(trial_id), TrialState(state)) for trial_id, state in found]

        def _load(self, study_id: int, trial_ids: set[int]) -> list[FrozenTrial]:
            """These trials, read whole (Optuna's read: the trial and its five relations)."""
            if not trial_ids:
                return []
            backend: Any = self._backend
            beyond_any = 2**31 - 1  # only the ids given: no (32-bit) id is greater
            return cast(
                list[FrozenTrial],
                backend._get_trials(
                    study_id,
                    states=None,
                    included_trial_ids=trial_ids,
                    trial_id_greater_than=beyond_any,
                ),
            )

        def _cached_trials(
            self, study_id: int, deepcopy: bool, states: Container[TrialState]
        ) -> list[FrozenTrial]:
            """What Optuna's `get_all_trials` returns after its refresh, from the cache."""
            with self._lock:
                trials = [t for t in self._studies[study_id].trials.values() if t.state in states]
                trials.sort(key=lambda t: t.number)
                return copy.deepcopy(trials) if deepcopy else trials

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

    HOLDING: tuple[type, ...] = (WorkerStorage,) if BATCH_PARAMS else ()
else:  # pragma: no cover - depends on the installed Optuna
    HOLDING = ()
