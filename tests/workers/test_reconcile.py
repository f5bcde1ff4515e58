"""Optuna trials agree with our runs after a worker dies between or inside its transactions.

A trial is created in Optuna, then recorded on the run; a run's outcome and its trial's end are
committed together (one transaction), or, where that could not be made, the outcome first and
Optuna told afterwards. A worker SIGKILLed inside the first window left an Optuna trial RUNNING
for ever (TPE's constant liar counted it in flight). The real worker is killed at the exact
statement (kill_at.py); a second real worker must repair it within the grace period.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from worker_helpers import (
    REPO_ROOT,
    create_pg_database,
    drop_pg_database,
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

from service.db import Run
from service.store import Store
from service.store.reconcile import ORPHAN_REASON, Reconciler

pytestmark = [pytest.mark.slow]

GRACE_S = 4.0
HEARTBEAT_S = 0.5
# The trial's end, written inside the run's outcome transaction: the first write of a trial's
# state in a study without enqueued baselines (asking creates a RUNNING trial with an INSERT,
# then numbers it).
TELL = r"^\s*UPDATE trials SET .*\bstate\s*="
ATTACH = r"^\s*UPDATE as_runs SET .*\boptuna_trial_id\s*="


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    pg = create_pg_database()
    yield pg
    drop_pg_database(pg)


def _run_killed_slot(pattern: str, url: str, home: Path, log: Path) -> int:
    env = worker_env(url, home, heartbeat_s=HEARTBEAT_S, grace_s=GRACE_S)
    argv = [sys.executable, str(Path(__file__).with_name("kill_at.py")), pattern]
    argv += ["--slot", "0", "--device", "cpu", "--max-trials", "1"]
    with open(log, "ab") as out:
        done = subprocess.run(argv, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    return done.returncode


def _optuna_trials(store: Store, study_name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=store.db.optuna).get_trials(
        deepcopy=False
    )


def _attached_trial(store: Store, name: str, worker_id: str) -> tuple[optuna.Study, Any]:
    """The study's Optuna study, and a claim whose run is attached to a new running trial."""
    optuna_study = optuna.load_study(study_name=name, storage=store.db.optuna)
    trial = optuna_study.ask()
    claim = store.runs.claim_next(worker_id)
    assert claim is not None
    store.runs.attach_trial(
        claim.run_id, trial_id=trial._trial_id, number=trial.number, params={}, family="relu",
        config=None,
    )  # fmt: skip
    return optuna_study, claim


def _study(store: Store, folder: Path) -> tuple[int, str]:
    spec = tiny_spec(folder, n_trials=1, activations={"relu": {}})
    study, _ = store.studies.create(make_user(store), spec)
    return study.id, study.optuna_name


def test_a_kill_inside_the_outcomes_transaction_leaves_nothing_half_written(
    tmp_path: Path, folder: Path, url: str
) -> None:
    """The run's outcome and its trial's end commit together: a kill just before the trial's
    end is written leaves both running; the lost run's retry finishes the study."""
    store = open_store(url)
    study_id, name = _study(store, folder)
    log = tmp_path / "worker.log"
    assert _run_killed_slot(TELL, url, tmp_path, log) == -9, log_text(log)[-3000:]
    (run,) = runs_of(store, study_id)
    assert run.state == "running" and run.finished_at is None  # the outcome was not stored
    (trial,) = _optuna_trials(store, name)
    assert trial.state == TrialState.RUNNING and trial.params == run.params

    env = worker_env(url, tmp_path, heartbeat_s=HEARTBEAT_S, grace_s=GRACE_S)
    with worker_processes(["--gpus", "cpu"], env, log):
        wait_for(
            lambda: store.studies.get(study_id).status == "completed", 120, "the retry to finish"
        )
        wait_for(
            lambda: all(t.state.is_finished() for t in _optuna_trials(store, name)),
            GRACE_S + 30,
            "no Optuna trial left running",
        )
    trials = {t._trial_id: t for t in _optuna_trials(store, name)}
    assert trials[trial._trial_id].state == TrialState.FAIL
    runs = runs_of(store, study_id)
    retry = next(r for r in runs if r.retry_of == run.id)
    assert retry.params == run.params  # retried with the same parameters
    assert retry.state == "complete" and trials[retry.optuna_trial_id].value == retry.value
    assert all(r.optuna_synced for r in runs)
    store.dispose()


def test_a_run_stored_without_its_trials_end_is_told_by_the_reconciler(
    folder: Path, url: str
) -> None:
    """A run whose outcome was stored but not told to Optuna (the end could not be made, or a
    storage that does not hold Optuna's writes): the reconciler sets the trial from the run."""
    store = open_store(url)
    study_id, name = _study(store, folder)
    optuna_study, claim = _attached_trial(store, name, "w-gone")
    assert store.runs.finish(claim.run_id, state="complete", value=0.625)
    (run,) = runs_of(store, study_id)
    assert not run.optuna_synced and optuna_study.trials[0].state == TrialState.RUNNING
    report = Reconciler(store.db, settle_s=0.0).sweep()
    assert report.synced
    (told,) = optuna_study.trials
    assert (told.state, told.value) == (TrialState.COMPLETE, 0.625)
    assert runs_of(store, study_id)[0].optuna_synced
    store.dispose()


def test_a_kill_between_asking_and_attaching_fails_the_orphan_trial(
    tmp_path: Path, folder: Path, url: str
) -> None:
    store = open_store(url)
    study_id, name = _study(store, folder)
    log = tmp_path / "worker.log"
    assert _run_killed_slot(ATTACH, url, tmp_path, log) == -9, log_text(log)[-3000:]
    (run,) = runs_of(store, study_id)
    assert run.state == "running" and run.optuna_trial_id is None
    (orphan,) = _optuna_trials(store, name)
    assert orphan.state == TrialState.RUNNING

    env = worker_env(url, tmp_path, heartbeat_s=HEARTBEAT_S, grace_s=GRACE_S)
    with worker_processes(["--gpus", "cpu"], env, log):
        wait_for(
            lambda: store.studies.get(study_id).status == "completed", 120, "the retry to finish"
        )
        wait_for(
            lambda: all(t.state.is_finished() for t in _optuna_trials(store, name)),
            GRACE_S + 30,
            "no Optuna trial left running",
        )
    trials = {t._trial_id: t for t in _optuna_trials(store, name)}
    assert trials[orphan._trial_id].state == TrialState.FAIL
    assert trials[orphan._trial_id].system_attrs["fail_reason"] == ORPHAN_REASON
    runs = runs_of(store, study_id)
    retry = next(r for r in runs if r.retry_of == run.id)
    assert retry.state == "complete" and trials[retry.optuna_trial_id].state == TrialState.COMPLETE
    assert all(r.optuna_synced for r in runs)
    store.dispose()


def test_the_reconciler_leaves_live_and_referenced_trials_alone(
    tmp_path: Path, folder: Path, url: str
) -> None:
    store = open_store(url)
    _, name = _study(store, folder)
    optuna_study, claim = _attached_trial(store, name, "w-live")
    reconciler = Reconciler(store.db, settle_s=0.0)
    for _ in range(3):
        report = reconciler.sweep()
        assert not report.synced and not report.orphans_failed
    assert optuna_study.trials[0].state == TrialState.RUNNING
    with store.db.session() as session:
        assert session.get(Run, claim.run_id).optuna_synced  # a running run has nothing to sync
    store.dispose()
