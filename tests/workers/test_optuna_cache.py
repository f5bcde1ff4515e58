"""The worker's Optuna storage: enqueued trials found without re-reading the study."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from sqlalchemy import event

from workers.optuna_cache import worker_storage


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


def test_storages_without_the_cache_are_used_as_they_are() -> None:
    memory = optuna.storages.InMemoryStorage()
    assert worker_storage(memory) is memory
