"""Fault tolerance with real worker processes on PostgreSQL: kill -9, a database restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import select
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
)

from service.db import Run, Worker
from service.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

GRACE_S = 5.0
HEARTBEAT_S = 0.5


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder big enough that a trial of a few epochs lasts a few seconds."""
    return make_image_folder(tmp_path_factory.mktemp("folder"), train_per_class=60)


def _slow_spec(folder: Path, n_trials: int, epochs: int) -> dict:
    # lenet at full width on 580 images: a few tenths of a second per epoch on one core.
    # A small learning rate: these trials must never diverge.
    lr = {"low": 0.005, "high": 0.02, "log": True}
    return tiny_spec(folder, n_trials=n_trials, epochs=epochs, width=1.0, lr=lr)


def _running_mid_trial(store: Store, study_id: int, epochs: int) -> tuple[Run, Worker] | None:
    """A running run past its first epoch and before its last, with its worker."""
    with store.db.session() as session:
        for run in session.scalars(
            select(Run).where(Run.study_id == study_id, Run.state == "running")
        ):
            if 1 <= run.epochs_done <= epochs - 3 and run.worker_id:
                worker = session.get(Worker, run.worker_id)
                if worker is not None:
                    return run, worker
    return None


def test_killed_worker_trial_is_lost_within_grace_and_retried_identically(
    tmp_path: Path, folder: Path, pg_url: str
) -> None:
    store = open_store(pg_url)
    n_trials, epochs = 4, 10
    study, _ = store.studies.create(make_user(store), _slow_spec(folder, n_trials, epochs))
    log = tmp_path / "worker.log"
    env = worker_env(pg_url, tmp_path, heartbeat_s=HEARTBEAT_S, grace_s=GRACE_S)
    with worker_processes(["--gpus", "cpu", "--per-gpu", "2"], env, log) as process:
        victim, worker = wait_for(
            lambda: _running_mid_trial(store, study.id, epochs), 240, "a trial in mid-run"
        )
        os.kill(worker.pid, signal.SIGKILL)
        killed_at = time.monotonic()

        def lost() -> Run | None:
            run = next(r for r in runs_of(store, study.id) if r.id == victim.id)
            return run if run.state != "running" else None

        lost_run = wait_for(lost, GRACE_S + 30, "the killed worker's run to be reaped")
        noticed_s = time.monotonic() - killed_at
        wait_for(lambda: store.studies.get(study.id).status == "completed", 300, "completion")
    assert process.returncode == 0, log_text(log)[-5000:]

    assert lost_run.state == "failed" and lost_run.failure_reason == "worker_lost"
    # Bounded: the grace period, plus one heartbeat of the reaping worker, plus slack for a
    # starved 2-core machine and this test's polling.
    assert noticed_s <= GRACE_S + 10, noticed_s
    assert not lost_run.counts_budget

    runs = runs_of(store, study.id)
    (retry,) = [r for r in runs if r.retry_of == victim.id]
    assert retry.state == "complete" and retry.attempt == 2
    assert retry.params == lost_run.params and retry.config == lost_run.config
    assert retry.worker_id != victim.worker_id
    assert retry.trial_number != lost_run.trial_number
    complete = [r for r in runs if r.counts_budget]
    assert len(complete) == n_trials and all(r.state == "complete" for r in complete)
    lost = [r for r in runs if not r.counts_budget]
    assert all(r.failure_reason == "worker_lost" for r in lost)  # the victim (and, on a
    # starved machine, possibly another slow worker): each retried, none counted twice

    optuna_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    states = [t.state for t in optuna_study.trials]
    assert states.count(TrialState.COMPLETE) == n_trials
    assert states.count(TrialState.FAIL) == len(lost)
    retried = next(t for t in optuna_study.trials if t.number == retry.trial_number)
    assert retried.params == lost_run.params
    assert "restarting" in log_text(log)  # the supervisor replaced the killed slot
    store.dispose()


def _restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        timeout=120,
    )


def test_postgres_restart_loses_nothing_and_workers_resume(
    tmp_path: Path, folder: Path, pg_url: str
) -> None:
    store = open_store(pg_url)
    n_trials, epochs = 6, 8
    study, _ = store.studies.create(make_user(store), _slow_spec(folder, n_trials, epochs))
    log = tmp_path / "worker.log"
    # Grace far above the outage: nothing may be declared lost because the database was away.
    env = worker_env(pg_url, tmp_path, heartbeat_s=HEARTBEAT_S, grace_s=60)
    with worker_processes(["--gpus", "cpu", "--per-gpu", "2"], env, log) as process:
        wait_for(lambda: _running_mid_trial(store, study.id, epochs), 240, "a trial in mid-run")
        _restart_postgres()
        wait_for(
            lambda: store.studies.get(study.id).status == "completed", 300, "the study to complete"
        )
    assert process.returncode == 0, log_text(log)[-5000:]
    text = log_text(log)
    assert "database unreachable" in text or "heartbeat failed" in text, text[-5000:]

    runs = runs_of(store, study.id)
    assert len(runs) == n_trials and all(r.state == "complete" for r in runs), [
        (r.id, r.state, r.failure_reason) for r in runs
    ]
    optuna_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    trials = {t.number: t for t in optuna_study.trials}
    assert len(trials) == n_trials
    for run in runs:
        assert [e.epoch for e in epochs_of(store, run.id)] == list(range(epochs))
        assert all(e.val_acc is not None for e in epochs_of(store, run.id))
        assert run.record is not None and run.record["epochs_done"] == epochs
        trial = trials[run.trial_number]
        assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(run.value)
        assert sorted(trial.intermediate_values) == list(range(epochs))
        stored = [e.val_acc for e in epochs_of(store, run.id)]
        assert stored == pytest.approx(run.record["val_accs"])
    store.dispose()
