"""`actsearch worker` as real OS processes: the basic loop, racing for a budget, failures."""

from __future__ import annotations

import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from worker_helpers import (
    epochs_of,
    log_text,
    make_image_folder,
    make_user,
    open_store,
    runs_of,
    tiny_spec,
    wait_for,
    worker_env,
    worker_processes,
    workers_of,
)

from service.store import Store

pytestmark = pytest.mark.slow

RECORD_KEYS = {"val_acc", "test_acc", "val_accs", "train_loss", "epochs_done", "manifest"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image folder (10 classes × 12 train + 4 test PNGs)."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


def _status(store: Store, study_id: int) -> str:
    return store.studies.get(study_id).status


def _assert_complete_study(store: Store, study_id: int, n_trials: int, epochs: int) -> None:
    """Exactly n_trials complete runs, distinct trial numbers, every record and epoch stored."""
    info = store.studies.get(study_id)
    runs = runs_of(store, study_id)
    assert len(runs) == n_trials, [(r.id, r.state) for r in runs]
    assert all(r.state == "complete" and r.counts_budget for r in runs)
    numbers = [r.trial_number for r in runs]
    assert len(set(numbers)) == n_trials and None not in numbers
    optuna_study = optuna.load_study(study_name=info.optuna_name, storage=store.db.optuna)
    trials = {t.number: t for t in optuna_study.trials}
    assert sorted(trials) == sorted(numbers)  # no Optuna trial without its run, and vice versa
    for run in runs:
        assert run.record is not None and set(run.record) >= RECORD_KEYS, run.record
        assert run.record["epochs_done"] == epochs == run.epochs_done
        assert run.value == pytest.approx(run.record["val_acc"])
        assert run.test_acc is not None and run.worker_id and run.finished_at is not None
        assert run.params and run.config and run.family
        assert [e.epoch for e in epochs_of(store, run.id)] == list(range(epochs))
        trial = trials[run.trial_number]
        assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(run.value)
        assert trial.params == run.params
        assert sorted(trial.intermediate_values) == list(range(epochs))


def test_two_processes_on_sqlite_run_a_study(tmp_path: Path, folder: Path) -> None:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    store = open_store(url)
    study, _ = store.studies.create(make_user(store), tiny_spec(folder, n_trials=6, epochs=2))
    log = tmp_path / "worker.log"
    with worker_processes(
        ["--gpus", "cpu", "--per-gpu", "2"], worker_env(url, tmp_path), log
    ) as process:
        wait_for(lambda: _status(store, study.id) == "completed", 240, "the study to complete")
    assert process.returncode == 0, log_text(log)
    _assert_complete_study(store, study.id, 6, 2)
    workers = workers_of(store)
    assert len(workers) == 2 and {w.status for w in workers} == {"stopped"}
    assert sum(w.trials_done for w in workers) == 6
    assert "epoch 2/2" in log_text(log)
    store.dispose()


@pytest.mark.postgres
def test_eight_processes_race_for_exactly_the_budget(
    tmp_path: Path, folder: Path, pg_url: str
) -> None:
    store = open_store(pg_url)
    n_trials = 40
    study, _ = store.studies.create(make_user(store), tiny_spec(folder, n_trials=n_trials))
    log = tmp_path / "worker.log"
    with worker_processes(
        ["--gpus", "cpu", "--per-gpu", "8"], worker_env(pg_url, tmp_path), log
    ) as process:
        wait_for(lambda: len(workers_of(store)) == 8, 240, "8 workers to register")
        wait_for(lambda: _status(store, study.id) == "completed", 300, "the study to complete")
    assert process.returncode == 0, log_text(log)[-5000:]
    _assert_complete_study(store, study.id, n_trials, 1)
    workers = workers_of(store)
    assert sum(w.trials_done for w in workers) == n_trials
    assert sum(1 for w in workers if w.trials_done) >= 2, "the workers did not actually race"
    store.dispose()


@pytest.mark.postgres
def test_diverging_trial_is_recorded_and_the_worker_goes_on(
    tmp_path: Path, folder: Path, pg_url: str
) -> None:
    store = open_store(pg_url)
    user = make_user(store)
    # Higher priority: the diverging study's trial is claimed first, then the normal ones.
    bad, _ = store.studies.create(
        user, tiny_spec(folder, n_trials=1, epochs=3, lr=1e6, priority=10, name="diverges")
    )
    good, _ = store.studies.create(user, tiny_spec(folder, n_trials=2, name="fine"))
    log = tmp_path / "worker.log"
    with worker_processes(
        ["--gpus", "cpu", "--max-trials", "3"], worker_env(pg_url, tmp_path), log
    ) as process:
        process.wait(timeout=240)  # exits by itself after 3 trials
    assert process.returncode == 0, log_text(log)[-5000:]
    (run,) = runs_of(store, bad.id)
    assert run.state == "failed" and run.failure_reason == "diverged", log_text(log)[-3000:]
    assert run.failure_epoch is not None and 0 <= run.failure_epoch < 3
    assert _status(store, bad.id) == "completed"
    good_runs = runs_of(store, good.id)
    assert [r.state for r in good_runs] == ["complete", "complete"]
    assert {r.worker_id for r in good_runs} == {run.worker_id}  # the same worker went on
    (trial,) = optuna.load_study(study_name=bad.optuna_name, storage=store.db.optuna).trials
    assert trial.state == TrialState.FAIL
    assert "failed (diverged at epoch" in log_text(log)
    store.dispose()


def test_sigterm_hands_the_running_trial_back_and_stops_cleanly(
    tmp_path: Path, folder: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    store = open_store(url)
    study, _ = store.studies.create(make_user(store), tiny_spec(folder, n_trials=1, epochs=500))
    log = tmp_path / "worker.log"
    with worker_processes(["--gpus", "cpu"], worker_env(url, tmp_path), log) as process:
        wait_for(lambda: any(r.epochs_done >= 1 for r in runs_of(store, study.id)), 240, "an epoch")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_text(log)[-3000:]
    lost, retry = runs_of(store, study.id)
    assert lost.state == "failed" and lost.failure_reason == "worker_lost"
    assert "signal" in (lost.failure_message or "")
    assert 1 <= lost.epochs_done < 500 and not lost.counts_budget
    assert retry.state == "queued" and retry.params == lost.params
    (worker,) = workers_of(store)
    assert worker.status == "stopped" and worker.current_run_id is None
    assert "handed back" in log_text(log)
    store.dispose()
