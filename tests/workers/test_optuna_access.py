"""The worker's Optuna storage: enqueued trials found without re-reading the study."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from search_space.optuna_access import (
    held_writes,
    holding_params,
    release_writes,
    worker_storage,
    write_held,
)
from search_space.optuna_access import tell_without_reread as tell_optuna
from service.db.outage import db_retry
from service.store.runs import Claim
from workers.trial_runner import TrialRunner

# Tables a whole-trial read selects from and a lent copy does not (`trial_values` is left out:
# Optuna's write of a value selects the row it replaces).
RELATIONS = (
    "trial_params",
    "trial_intermediate_values",
    "trial_user_attributes",
    "trial_system_attributes",
)


def _worker_study(url: str, name: str) -> optuna.Study:
    storage = worker_storage(optuna.storages.RDBStorage(url))
    return optuna.load_study(study_name=name, storage=storage)


def _create(url: str) -> optuna.Study:
    return optuna.create_study(storage=url, direction="maximize")


def test_enqueued_trials_are_asked_once_each_with_their_parameters(url: str) -> None:
    owner = _create(url)
    for lr in (0.1, 0.2, 0.3):
        owner.enqueue_trial({"lr": lr})
    first, second = (_worker_study(url, owner.study_name) for _ in range(2))
    asked = []
    for study in (first, second, first, second):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)  # writes through the cache
        trial.report(lr / 2, 0)
        study.tell(trial, lr)
        asked.append((trial.number, lr))
    # The three enqueued trials in order, then a sampled one; no trial taken twice.
    assert [number for number, _ in asked] == [0, 1, 2, 3]
    assert [lr for _, lr in asked[:3]] == [0.1, 0.2, 0.3]
    trials = optuna.load_study(study_name=owner.study_name, storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [t.intermediate_values[0] for t in trials] == [lr / 2 for _, lr in asked]


def test_other_reads_still_see_the_whole_study(url: str) -> None:
    owner = _create(url)
    worker = _worker_study(url, owner.study_name)
    done = owner.ask()
    owner.tell(done, 0.5)
    owner.enqueue_trial({"lr": 0.1})
    running = owner.ask()  # pops the enqueued trial
    assert worker.get_trials(states=(TrialState.WAITING,)) == []
    states = [t.state for t in worker.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE, TrialState.RUNNING]
    owner.tell(running, 0.7)
    assert [t.value for t in worker.get_trials(states=(TrialState.COMPLETE,))] == [0.5, 0.7]


def test_finding_no_enqueued_trial_reads_no_trial_rows(url: str) -> None:
    owner = _create(url)
    for _ in range(3):
        owner.ask()  # running trials a plain cached storage would re-read on every ask
    storage = worker_storage(optuna.storages.RDBStorage(url))
    study = optuna.load_study(study_name=owner.study_name, storage=storage)
    statements: list[str] = []
    engine = storage._backend.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert study._pop_waiting_trial_id() is None
    assert not any("trial_params" in s or "trial_values" in s for s in statements), statements


def _statements(study: optuna.Study) -> list[str]:
    """Every SQL statement the study's storage sends from now on."""
    statements: list[str] = []
    engine = study._storage._backend.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    return statements


def _reads_relations(statements: list[str]) -> list[str]:
    return [
        s for s in statements if s.lstrip().startswith("SELECT") and any(r in s for r in RELATIONS)
    ]


def test_an_asked_trial_is_not_read_back(url: str) -> None:
    owner = _create(url)
    owner.tell(owner.ask(), 0.1)
    worker = _worker_study(url, owner.study_name)
    statements = _statements(worker)
    trial = worker.ask()
    assert _reads_relations(statements) == []
    assert trial.number == 1 and trial.params == {}
    trial.suggest_float("lr", 1e-3, 1.0, log=True)
    trial.set_user_attr("seed", 3)
    worker.tell(trial, 0.9)
    stored = optuna.load_study(study_name=owner.study_name, storage=url).trials[1]
    assert stored.params == trial.params and stored.user_attrs == {"seed": 3}
    assert stored.state == TrialState.COMPLETE and stored.value == 0.9


def test_telling_a_running_trial_reads_its_state_not_the_whole_trial(url: str) -> None:
    owner = _create(url)
    worker = _worker_study(url, owner.study_name)
    done, pruned = worker.ask(), worker.ask()
    for trial in (done, pruned):
        trial.suggest_float("lr", 1e-3, 1.0, log=True)
        trial.report(0.25, 0)
        trial.report(0.5, 1)
    statements = _statements(worker)
    tell_optuna(worker, done, 0.75, None)
    tell_optuna(worker, pruned, None, TrialState.PRUNED)
    assert _reads_relations(statements) == []
    stored = optuna.load_study(study_name=owner.study_name, storage=url).trials
    assert [t.state for t in stored] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert [t.value for t in stored] == [0.75, 0.5]  # a pruned trial keeps its last report
    assert stored[0].intermediate_values == {0: 0.25, 1: 0.5}


def test_a_trial_finished_elsewhere_is_read_in_full_and_skipped(url: str) -> None:
    owner = _create(url)
    worker = _worker_study(url, owner.study_name)
    trial = worker.ask()
    owner.tell(trial.number, state=TrialState.FAIL)  # e.g. reaped while this worker ran it
    tell_optuna(worker, trial, 0.75, None)  # skipped, as Study.tell(skip_if_finished=True)
    stored = optuna.load_study(study_name=owner.study_name, storage=url).trials
    assert [t.state for t in stored] == [TrialState.FAIL] and stored[0].value is None
    assert worker._storage._lent == {}  # type: ignore[attr-defined]  # nothing left lent


def test_storages_without_the_cache_are_used_as_they_are() -> None:
    memory = optuna.storages.InMemoryStorage()
    assert worker_storage(memory) is memory


class _FailingSampler(optuna.samplers.RandomSampler):
    """Raises in `before_trial` (which `Study.ask` calls after the trial is set running)."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__(seed=0)
        self.errors = errors

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.errors:
            raise self.errors.pop(0)


def _claim(params: dict[str, Any] | None = None) -> Claim:
    return Claim(run_id=1, study_id=1, optuna_name="x", spec={}, attempt=1, params=params,
                 retry_of=None)  # fmt: skip


def _failing_study(url: str, name: str, errors: list[Exception]) -> optuna.Study:
    storage = worker_storage(optuna.storages.RDBStorage(url))
    return optuna.load_study(study_name=name, storage=storage, sampler=_FailingSampler(errors))


def test_a_fresh_trial_whose_ask_fails_is_failed_not_left_running(url: str) -> None:
    owner = _create(url)
    worker = _failing_study(url, owner.study_name, [ValueError("the sampler refuses")])
    with pytest.raises(ValueError, match="the sampler refuses"):
        TrialRunner._trial(worker, _claim())
    (stored,) = optuna.load_study(study_name=owner.study_name, storage=url).trials
    assert stored.state == TrialState.FAIL
    assert "ValueError: the sampler refuses" in stored.system_attrs["fail_reason"]
    assert worker._storage._lent == {}  # type: ignore[attr-defined]


def test_an_enqueued_trial_whose_ask_fails_waits_again_with_its_parameters(url: str) -> None:
    owner = _create(url)
    owner.enqueue_trial({"lr": 0.25})
    worker = _failing_study(url, owner.study_name, [ValueError("once")])
    with pytest.raises(ValueError):
        TrialRunner._trial(worker, _claim())
    assert [t.state for t in owner.get_trials()] == [TrialState.WAITING]
    trial = TrialRunner._trial(worker, _claim())  # the sampler no longer raises
    assert trial.number == 0 and trial.suggest_float("lr", 1e-3, 1.0) == 0.25


def test_a_retry_trial_whose_ask_fails_is_failed(url: str) -> None:
    owner = _create(url)
    worker = _failing_study(url, owner.study_name, [ValueError("once")])
    with pytest.raises(ValueError):
        TrialRunner._trial(worker, _claim({"lr": 0.5}))
    assert [t.state for t in owner.get_trials()] == [TrialState.FAIL]


def test_a_database_error_while_asking_leaves_one_running_trial(url: str) -> None:
    """The worker retries the ask after an outage: the half-built trial must not stay RUNNING."""
    owner = _create(url)
    outage = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    worker = _failing_study(url, owner.study_name, [outage])
    trial = db_retry(lambda: TrialRunner._trial(worker, _claim()), "ask", base_s=0.01)
    states = [t.state for t in owner.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING] and trial.number == 1


def test_two_workers_racing_for_one_enqueued_trial_start_it_once(url: str) -> None:
    """B read the trial WAITING; A starts it before B's write lands: only A has started it."""
    owner = _create(url)
    owner.enqueue_trial({"lr": 0.1})
    first, second = (_worker_study(url, owner.study_name) for _ in range(2))
    (waiting,) = second._storage.get_all_trials(second._study_id, states=(TrialState.WAITING,))
    started: list[bool] = []

    def first_starts_it(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE TRIALS") and not started:
            started.append(
                first._storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
            )

    engine = second._storage._backend.engine
    event.listen(engine, "before_cursor_execute", first_starts_it)
    try:
        second_started = second._storage.set_trial_state_values(
            waiting._trial_id, TrialState.RUNNING
        )
    finally:
        event.remove(engine, "before_cursor_execute", first_starts_it)
    assert started == [True] and second_started is False
    trials = optuna.load_study(study_name=owner.study_name, storage=url).trials
    assert [t.state for t in trials] == [TrialState.RUNNING]


def _commits(study: optuna.Study) -> list[str]:
    """Commits on the worker's engine from now on."""
    commits: list[str] = []
    engine = study._storage._backend.engine  # type: ignore[attr-defined]
    event.listen(engine, "commit", lambda *_: commits.append("commit"))
    return commits


def _suggest_three(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "family": trial.suggest_categorical("family", ["relu", "smu"]),
        "lr": trial.suggest_float("lr", 1e-3, 1.0, log=True),
        "depth": trial.suggest_int("depth", 1, 4),
    }


def test_held_parameters_are_stored_in_one_transaction(url: str) -> None:
    owner = _create(url)
    study = _worker_study(url, owner.study_name)
    trial = study.ask()
    statements = _statements(study)
    with holding_params(study, trial):
        suggested = _suggest_three(trial)
        assert trial.params == suggested  # the trial knows them at once
    assert not [s for s in statements if "INSERT INTO trial_params" in s]
    commits = _commits(study)
    write_held(study, trial)
    assert commits == ["commit"]
    assert len([s for s in statements if "INSERT INTO trial_params" in s]) == 1  # 3 rows
    stored = optuna.load_study(study_name=owner.study_name, storage=url).trials[0]
    assert stored.params == suggested
    assert set(stored.distributions) == {"family", "lr", "depth"}


def _held_trial(url: str) -> tuple[str, optuna.Study, optuna.Trial, dict[str, Any]]:
    """A worker's trial with three parameters suggested and held: (study name, study, trial,
    the parameters)."""
    owner = _create(url)
    study = _worker_study(url, owner.study_name)
    trial = study.ask()
    with holding_params(study, trial):
        suggested = _suggest_three(trial)
    return owner.study_name, study, trial, suggested


def test_held_parameters_written_again_are_not_stored_twice(url: str) -> None:
    """A retry after a commit whose answer was lost finds them stored and adds nothing."""
    name, study, trial, suggested = _held_trial(url)
    storage: Any = study._storage
    held = list(storage._held[trial._trial_id].params)
    write_held(study, trial)
    storage._held[trial._trial_id].params[:] = held  # as if the commit's answer had been lost
    write_held(study, trial)
    assert optuna.load_study(study_name=name, storage=url).trials[0].params == suggested


def test_a_held_parameter_is_checked_against_the_study_when_suggested(url: str) -> None:
    owner = _create(url)
    study = _worker_study(url, owner.study_name)
    first = study.ask()
    with holding_params(study, first):
        first.suggest_float("lr", 1e-3, 1.0, log=True)
    write_held(study, first)
    second = study.ask()
    with pytest.raises(ValueError, match="different distribution"), holding_params(study, second):
        second.suggest_categorical("lr", ["a", "b"])  # another kind of distribution
    write_held(study, second)  # nothing held any more: nothing written
    assert optuna.load_study(study_name=owner.study_name, storage=url).trials[1].params == {}


def test_a_held_trial_is_stored_whole_in_one_transaction(url: str) -> None:
    """Parameters, reported values and the end that `tell` writes are held until written."""
    name, study, trial, suggested = _held_trial(url)
    trial.report(0.25, 0)
    trial.report(0.4, 1)
    assert trial.should_prune() is False  # the pruner sees the held values
    tell_optuna(study, trial, 0.5, None, verify=False)
    assert _worker_study(url, name).trials[0].state == TrialState.RUNNING  # nothing written yet
    commits = _commits(study)
    db_retry(lambda: write_held(study, trial), "store the trial")
    assert commits == ["commit"]
    again = _worker_study(url, name).trials[0]
    assert again.params == suggested
    assert again.intermediate_values == {0: 0.25, 1: 0.4}
    assert (again.state, again.value) == (TrialState.COMPLETE, 0.5)
    assert again.datetime_complete is not None
    assert held_writes(study, trial) is None  # nothing is held after the trial's end


def test_held_writes_go_into_the_callers_transaction(url: str) -> None:
    """Written with another session's connection, they commit or roll back with it."""
    name, study, trial, suggested = _held_trial(url)
    trial.report(0.25, 0)
    engine = create_engine(url)
    held = held_writes(study, trial)
    assert held is not None
    with Session(engine) as session, session.begin():
        held.write(session)
        session.rollback()
    assert _worker_study(url, name).trials[0].params == {}
    held = held_writes(study, trial)  # a rolled-back transaction leaves them held
    assert held is not None and len(held.params) == 3 and held.steps == ((0, 0.25),)
    with Session(engine) as session, session.begin():
        held.write(session)
    held.written()
    assert held_writes(study, trial) is None
    stored = _worker_study(url, name).trials[0]
    assert (stored.params, stored.intermediate_values) == (suggested, {0: 0.25})
    engine.dispose()


def test_a_trial_finished_meanwhile_gets_no_held_value_nor_end(url: str) -> None:
    """Reaped while it trained (its trial failed elsewhere): the caller's transaction still
    commits, and the failed trial stays as it is."""
    name, study, trial, _ = _held_trial(url)
    write_held(study, trial)
    elsewhere = optuna.storages.RDBStorage(url)
    elsewhere.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    trial.report(0.25, 0)
    tell_optuna(study, trial, 0.5, None, verify=False)
    write_held(study, trial)
    stored = _worker_study(url, name).trials[0]
    assert (stored.state, stored.value, stored.intermediate_values) == (TrialState.FAIL, None, {})
    assert held_writes(study, trial) is None


def test_released_writes_are_dropped(url: str) -> None:
    name, study, trial, _ = _held_trial(url)
    trial.report(0.25, 0)
    release_writes(study, trial)
    assert held_writes(study, trial) is None
    trial.report(0.5, 1)  # no longer held: written at once, as Optuna writes it
    assert _worker_study(url, name).trials[0].intermediate_values == {1: 0.5}


@pytest.fixture
def away_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local time five hours from UTC (the machine's is often UTC itself)."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_written_directly_read_back_as_optunas_own(url: str, away_from_utc: None) -> None:
    """A held end's datetime_complete and an enqueued trial's datetime_start are stored the way
    Optuna's model stores them (naive UTC since Optuna 5): read back, they are now."""
    owner = _create(url)
    owner.enqueue_trial({"lr": 0.1})
    study = _worker_study(url, owner.study_name)
    trial = study.ask()  # the enqueued one, started by our conditional UPDATE
    with holding_params(study, trial):
        trial.suggest_float("lr", 1e-3, 1.0, log=True)
    tell_optuna(study, trial, 0.5, None, verify=False)
    write_held(study, trial)
    (stored,) = _worker_study(url, owner.study_name).trials
    now = datetime.now()
    assert stored.datetime_start is not None and stored.datetime_complete is not None
    assert abs(stored.datetime_start - now) < timedelta(minutes=5)
    assert abs(stored.datetime_complete - now) < timedelta(minutes=5)


def _sent(study: optuna.Study) -> list[tuple[str, Any]]:
    """Every statement the study's storage sends from now on, with its parameters."""
    sent: list[tuple[str, Any]] = []
    engine = study._storage._backend.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", lambda *a: sent.append((a[2], a[3])))
    return sent


def _loaded_ids(sent: list[tuple[str, Any]]) -> set[int]:
    """Trial ids named by the whole-trial loads (`SELECT trials.trial_id AS …`) among `sent`."""
    ids: set[int] = set()
    for statement, params in sent:
        if statement.lstrip().startswith("SELECT trials.trial_id AS"):
            if isinstance(params, dict):  # psycopg: the IN list's keys are trial_id_1_<n>
                ids.update(v for k, v in params.items() if k.startswith("trial_id_1_"))
            else:  # sqlite: positional, between the study's id and the "newer than" bound
                ids.update(params[1:-1])
    return ids


def test_a_read_of_finished_trials_loads_only_trials_newly_finished_elsewhere(url: str) -> None:
    """The pruner's read, each epoch: this worker's own running trial is not loaded back, a
    trial another worker finished is, once; one this worker ended is known without a load."""
    owner = _create(url)
    study, other = (_worker_study(url, owner.study_name) for _ in range(2))
    first = study.ask()
    study.tell(first, 0.1)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1  # the cache is built
    mine = study.ask()
    with holding_params(study, mine):
        mine.suggest_float("lr", 1e-3, 1.0, log=True)
    mine.report(0.2, 0)
    theirs = other.ask()
    other.tell(theirs, 0.3)
    sent = _sent(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [(t.number, t.value) for t in complete] == [(0, 0.1), (theirs.number, 0.3)]
    assert _loaded_ids(sent) == {theirs._trial_id}
    sent.clear()
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    assert len(sent) == 1  # which trials finished: none new
    tell_optuna(study, mine, 0.5, None, verify=False)
    write_held(study, mine)
    sent.clear()
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [(t.number, t.value) for t in complete] == [(0, 0.1), (1, 0.5), (2, 0.3)]
    ended = complete[1]
    assert ended.intermediate_values == {0: 0.2} and ended.params == mine.params
    assert _loaded_ids(sent) == set()  # ended here: known without loading it back
    again = _worker_study(url, owner.study_name).get_trials(states=(TrialState.COMPLETE,))
    assert [(t.number, t.value) for t in again] == [(t.number, t.value) for t in complete]


def test_a_full_read_still_sees_every_running_trial(url: str) -> None:
    """After reads of finished trials only, a read of all trials (TPE's) has the running ones
    with their latest values, as Optuna's refresh gives them."""
    owner = _create(url)
    study, other = (_worker_study(url, owner.study_name) for _ in range(2))
    first = study.ask()
    study.tell(first, 0.1)
    study.get_trials(states=(TrialState.COMPLETE,))
    theirs = other.ask()
    study.get_trials(states=(TrialState.COMPLETE,))  # theirs: running, not loaded
    theirs.report(0.7, 0)
    everything = {t.number: t for t in study.get_trials()}
    assert everything[theirs.number].state == TrialState.RUNNING
    assert everything[theirs.number].intermediate_values == {0: 0.7}
    other.tell(theirs, 0.9)
    assert [t.value for t in study.get_trials(states=(TrialState.COMPLETE,))] == [0.1, 0.9]
