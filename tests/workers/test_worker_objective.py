"""One claimed run through the real objective, in-process: real store, real Optuna, real training.

These cover the objective's branches cheaply (no process start-up); the worker-process tests
cover the same paths end to end.
"""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event, update
from worker_helpers import (
    epochs_of,
    make_image_folder,
    make_user,
    open_store,
    runs_of,
    tiny_spec,
    wait_for,
)

from search_space import optuna_access
from search_space.optuna_access import create_running_trial
from search_space.optuna_access import tell_without_reread as tell_optuna
from search_space.spec import SpecError, parse_spec
from search_space.suggest import suggest_config
from service.db import Study, Worker, utcnow
from service.settings import Settings
from service.store import Store, UserInfo
from workers.options import SlotOptions
from workers.torch_training import TorchTraining
from workers.trial_runner import TrialRunner, missing_package_message


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image folder shared by this module's studies."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh embedded database."""
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield store
    store.dispose()


@pytest.fixture
def user(store: Store) -> UserInfo:
    """A study owner."""
    return make_user(store)


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> TorchTraining:
    """The real training side on the CPU, its data cache shared by this module."""
    home = tmp_path_factory.mktemp("home")
    return TorchTraining(Settings(home=home), SlotOptions(threads=1))


def _runner(
    store: Store, training: TorchTraining, worker_id: str = "w-test", hostname: str = "test"
) -> TrialRunner:
    store.workers.register(worker_id, hostname=hostname, pid=1, device="cpu")
    return TrialRunner(
        store=store, settings=Settings(), worker_id=worker_id, training=training, hostname=hostname
    )


def test_complete_run_stores_epochs_record_and_tells_optuna(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=1, epochs=2))
    runner = _runner(store, training)
    claim = store.runs.claim_next("w-test")
    assert claim is not None
    outcome = runner.run(claim)
    assert outcome.state == "complete"
    (run,) = runs_of(store, study.id)
    assert run.state == "complete" and run.value == pytest.approx(outcome.value)
    assert run.record is not None and run.record["epochs_done"] == 2
    assert run.record["manifest"]["config"]["training"]["epochs"] == 2
    assert [e.epoch for e in epochs_of(store, run.id)] == [0, 1]
    assert run.params and run.family in ("relu", "leaky_relu") and run.config
    trial = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna).trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(run.value)
    assert set(trial.intermediate_values) == {0, 1}
    assert store.studies.get(study.id).status == "completed"


def test_several_seeds_average_and_record_each(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=1, epochs=1, seeds=3))
    claim = store.runs.claim_next("w-test")
    assert claim is not None
    _runner(store, training).run(claim)
    (run,) = runs_of(store, study.id)
    seeds = run.record["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1, 2]
    values = [s["val_acc"] for s in seeds]
    assert run.value == pytest.approx(sum(values) / 3)
    assert run.value_std is not None and run.value_std >= 0
    assert len(epochs_of(store, run.id)) == 1  # the first seed's curve only


def test_retry_trial_suggests_exactly_the_lost_parameters(
    store: Store, user: UserInfo, folder: Path
) -> None:
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=2))
    spec_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    from search_space.spec import parse_spec

    spec = parse_spec(store.studies.get(study.id).spec)
    first = spec_study.ask()
    config = suggest_config(first, spec)
    lost = dict(first.params)
    spec_study.tell(first, state=TrialState.FAIL)
    again = create_running_trial(spec_study, {"fixed_params": lost, "actsearch_retry_of_run": 1})
    assert suggest_config(again, spec) == config
    assert again.params == lost and again.number != first.number


def test_missing_data_fails_the_study_and_leaves_no_run(
    store: Store, user: UserInfo, tmp_path: Path, training: TorchTraining
) -> None:
    study, _ = store.studies.create(user, tiny_spec(tmp_path / "nowhere", n_trials=3))
    claim = store.runs.claim_next("w-test")
    assert claim is not None
    outcome = _runner(store, training).run(claim)
    assert outcome.state == "released"
    info = store.studies.get(study.id)
    assert info.status == "failed" and info.error and "nowhere" in info.error
    assert runs_of(store, study.id) == []
    trials = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna).trials
    assert trials == []
    assert store.runs.claim_next("w-test") is None


def test_data_missing_on_one_machine_leaves_the_study_to_the_others(
    store: Store, user: UserInfo, tmp_path: Path, training: TorchTraining
) -> None:
    # Data belong to a machine: host-a lacking them must not fail a study host-b can run.
    study, _ = store.studies.create(user, tiny_spec(tmp_path / "nowhere", n_trials=3))
    on_a = _runner(store, training, "w-a", hostname="host-a")
    on_b = _runner(store, training, "w-b", hostname="host-b")
    claim = store.runs.claim_next("w-a")
    assert claim is not None
    outcome = on_a.run(claim)
    assert outcome.state == "released" and outcome.skip_study
    info = store.studies.get(study.id)
    assert info.status in ("queued", "running") and runs_of(store, study.id) == []
    assert info.error and "host-a cannot run this study" in info.error and "host-b" in info.error
    assert store.runs.claim_next("w-a", exclude=[study.id]) is None  # host-a leaves it alone
    claim = store.runs.claim_next("w-b")
    assert claim is not None
    outcome = on_b.run(claim)  # host-b lacks them too: now no live machine can run it
    assert outcome.state == "released" and not outcome.skip_study
    info = store.studies.get(study.id)
    assert info.status == "failed" and info.error
    assert "no machine can run it" in info.error and "host-a: " in info.error
    assert runs_of(store, study.id) == []


def test_data_missing_where_the_other_machines_are_silent_fails_the_study(
    store: Store, user: UserInfo, tmp_path: Path, training: TorchTraining
) -> None:
    study, _ = store.studies.create(user, tiny_spec(tmp_path / "nowhere", n_trials=3))
    on_a = _runner(store, training, "w-a", hostname="host-a")
    store.workers.register("w-gone", hostname="host-gone", pid=2, device="cpu")
    with store.db.session() as session:  # host-gone stopped heartbeating long ago
        session.execute(
            update(Worker)
            .where(Worker.id == "w-gone")
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    claim = store.runs.claim_next("w-a")
    assert claim is not None
    assert not on_a.run(claim).skip_study
    assert store.studies.get(study.id).status == "failed"


def test_a_stored_spec_valid_when_submitted_still_runs_after_checks_were_added(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    # Fields a sampler or pruner ignores are refused at submission since; a study stored before
    # with some set (here random's constant_liar, none's percentile) must still run.
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=1))
    stored = copy.deepcopy(store.studies.get(study.id).spec)
    stored["sampler"]["constant_liar"] = False
    stored["pruner"]["percentile"] = 10.0
    with pytest.raises(SpecError, match=r"sampler\.constant_liar: the random sampler does not"):
        store.studies.create(user, stored)  # as a new submission: refused
    with store.db.session() as session:
        session.execute(update(Study).where(Study.id == study.id).values(spec=stored))
    claim = store.runs.claim_next("w-test")
    assert claim is not None and claim.spec["pruner"]["percentile"] == 10.0
    assert _runner(store, training).run(claim).state == "complete"
    assert store.studies.get(study.id).status == "completed"


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """base with changes merged in, mapping by mapping."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


# Checks added since the first release that refuse only what the code ran harmlessly or ignored
# (tests/search_space/test_study_spec.py: SUBMISSION_ONLY): the stored-spec changes of a study
# submitted before them, and the fields a new submission of it is refused for.
_STORED_BEFORE_A_CHECK = {
    "blank name": ({"name": " "}, {"name"}),
    "twice a baseline, no hyperband bracket": (
        {
            "baselines": ["relu", "relu"],
            "pruner": {"name": "hyperband", "min_resource": 5, "max_resource": 3},
        },
        {"baselines.1", "pruner.max_resource"},
    ),
    "caps": (
        {
            "timeouts": {"trial_s": 10**8, "study_s": 10**9},
            "sampler": {"name": "tpe", "n_startup_trials": 10**6},
            "pruner": {"name": "median", "n_startup_trials": 10**6, "n_warmup_steps": 10**5},
        },
        {
            "timeouts.trial_s",
            "timeouts.study_s",
            "sampler.n_startup_trials",
            "pruner.n_startup_trials",
            "pruner.n_warmup_steps",
        },
    ),
    "hyperband caps": (
        {"pruner": {"name": "hyperband", "max_resource": 10**5, "reduction_factor": 10**5}},
        {"pruner.max_resource", "pruner.reduction_factor"},
    ),
    "successive halving caps": (
        {
            "pruner": {
                "name": "successive_halving",
                "min_resource": 10**5,
                "min_early_stopping_rate": 10**5,
                "interval_steps": 10**5,  # ignored by it, and past its cap
            }
        },
        {"pruner.min_resource", "pruner.min_early_stopping_rate", "pruner.interval_steps"},
    ),
    "grid past its cap": (
        {
            "sampler": {"name": "grid"},
            "training": {"lr": 0.02, "weight_decay": {"low": 0.0, "high": 0.01, "step": 1e-8}},
        },
        {"sampler.name"},
    ),
    "path with cifar": (
        {"dataset": {"name": "cifar10", "path": "/data/cifar", "val_size": 20}},
        {"dataset.path"},
    ),
}


@pytest.mark.parametrize("case", list(_STORED_BEFORE_A_CHECK))
def test_a_stored_spec_a_later_check_refuses_when_new_still_runs(
    store: Store, user: UserInfo, folder: Path, tmp_path: Path, case: str
) -> None:
    changes, refused = _STORED_BEFORE_A_CHECK[case]
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=1, epochs=2))
    stored = _merged(store.studies.get(study.id).spec, changes)
    with pytest.raises(SpecError) as info:
        store.studies.create(user, stored)  # as a new submission (or a clone): refused
    assert {e["loc"] for e in info.value.errors} == refused
    with store.db.session() as session:
        session.execute(update(Study).where(Study.id == study.id).values(spec=stored))
    # CIFAR is read from where the worker's --data points (here the tiny folder), whatever
    # dataset.path says.
    training = TorchTraining(Settings(home=tmp_path, data=str(folder)), SlotOptions(threads=1))
    claim = store.runs.claim_next("w-test")
    assert claim is not None and claim.spec == stored
    assert _runner(store, training).run(claim).state == "complete"
    assert store.studies.get(study.id).status == "completed"


def test_diverging_run_is_recorded_with_its_epoch(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=1, epochs=3, lr=1e6))
    claim = store.runs.claim_next("w-test")
    assert claim is not None
    outcome = _runner(store, training).run(claim)
    assert outcome.state == "failed" and outcome.reason == "diverged"
    (run,) = runs_of(store, study.id)
    assert run.state == "failed" and run.failure_reason == "diverged"
    assert run.failure_epoch is not None and 0 <= run.failure_epoch < 3
    assert "nan" in (run.failure_message or "").lower() or "inf" in (run.failure_message or "")
    trial = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna).trials[0]
    assert trial.state == TrialState.FAIL


def test_signal_hands_back_after_the_epoch_unless_it_is_the_last(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=2, epochs=3))
    runner = _runner(store, training)
    runner.stopping.set()  # SIGTERM arrived: this run is handed back after its first epoch
    claim = store.runs.claim_next("w-test")
    assert claim is not None
    assert runner.run(claim).state == "handed_back"
    lost, retry = runs_of(store, study.id)
    assert lost.state == "failed" and lost.failure_reason == "worker_lost"
    assert lost.epochs_done == 1 and not lost.counts_budget
    assert retry.state == "queued" and retry.retry_of == lost.id and retry.params == lost.params

    # A one-epoch study is in its last epoch when the signal is seen: it finishes normally.
    last, _ = store.studies.create(user, tiny_spec(folder, n_trials=1, epochs=1, priority=5))
    claim = store.runs.claim_next("w-test")
    assert claim is not None and claim.study_id == last.id
    assert runner.run(claim).state == "complete"


def test_cancel_stops_a_running_trial_within_one_epoch(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=1, epochs=50))
    claim = store.runs.claim_next("w-test")
    assert claim is not None

    at_cancel: list[int] = []

    def cancel_after_first_epoch() -> None:
        wait_for(lambda: runs_of(store, study.id)[0].epochs_done >= 1, 120, "a first epoch")
        store.studies.transition(study.id, "cancel")
        at_cancel.append(runs_of(store, study.id)[0].epochs_done)

    canceller = threading.Thread(target=cancel_after_first_epoch)
    canceller.start()
    outcome = _runner(store, training).run(claim)
    canceller.join()
    assert outcome.state == "cancelled"
    (run,) = runs_of(store, study.id)
    assert run.state == "cancelled" and run.failure_reason == "cancelled"
    assert run.epochs_done <= at_cancel[0] + 1  # at most the epoch that was running
    assert store.studies.get(study.id).status == "cancelled"


def test_prescreen_rejects_without_training(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    spec = tiny_spec(folder, n_trials=1, activations={"elu": {"alpha": 5000.0}})
    study, _ = store.studies.create(user, spec)
    claim = store.runs.claim_next("w-test")
    assert claim is not None
    outcome = _runner(store, training).run(claim)
    assert outcome.state == "failed" and outcome.reason == "rejected"
    (run,) = runs_of(store, study.id)
    assert run.failure_reason == "rejected" and "exploding" in (run.failure_message or "")
    assert run.epochs_done == 0 and epochs_of(store, run.id) == []
    trial = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna).trials[0]
    assert trial.state == TrialState.FAIL


def test_pruner_stops_a_worse_trial(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    spec = tiny_spec(folder, n_trials=2, epochs=4, lr={"choices": [0.5, 1e-7]}, pruner="median")
    spec["pruner"] = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    study, _ = store.studies.create(user, spec)
    optuna_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    # A learning trial first, then one that cannot learn: the median pruner must stop it.
    optuna_study.enqueue_trial({"training.lr": 0.5, "activation": "relu"})
    optuna_study.enqueue_trial({"training.lr": 1e-7, "activation": "relu"})
    runner = _runner(store, training)
    outcomes = []
    for _ in range(2):
        claim = store.runs.claim_next("w-test")
        assert claim is not None
        outcomes.append(runner.run(claim))
    assert [o.state for o in outcomes] == ["complete", "pruned"], outcomes
    good, bad = runs_of(store, study.id)
    assert good.params["training.lr"] == 0.5 and bad.params["training.lr"] == 1e-7
    assert bad.state == "pruned" and bad.epochs_done < 4
    assert bad.value is not None and bad.value < good.value
    trial = optuna_study.trials[1]
    assert trial.state == TrialState.PRUNED
    assert store.studies.get(study.id).status == "completed"


def test_last_epoch_is_reported_but_never_pruned(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    # The pruner may act from the last epoch on only: by then the same worse trial as above has
    # nothing left to save, so it must count as complete (a pruned full result would be ranked
    # below every complete one by TPE).
    spec = tiny_spec(folder, n_trials=2, epochs=4, lr={"choices": [0.5, 1e-7]}, pruner="median")
    spec["pruner"] = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 3}
    study, _ = store.studies.create(user, spec)
    optuna_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    optuna_study.enqueue_trial({"training.lr": 0.5, "activation": "relu"})
    optuna_study.enqueue_trial({"training.lr": 1e-7, "activation": "relu"})
    runner = _runner(store, training)
    for _ in range(2):
        claim = store.runs.claim_next("w-test")
        assert claim is not None
        assert runner.run(claim).state == "complete"
    good, bad = runs_of(store, study.id)
    assert bad.value is not None and bad.value < good.value
    assert [t.state for t in optuna_study.trials] == [TrialState.COMPLETE] * 2
    assert optuna_study.trials[1].intermediate_values[3] == bad.value


@pytest.mark.parametrize(
    ("sampler", "pruner"),
    [
        ("tpe", "median"),
        ("random", "percentile"),
        ("cmaes", "hyperband"),
        ("qmc", "successive_halving"),
        ("grid", "none"),
    ],
)
def test_every_sampler_and_pruner_runs_trials(
    store: Store,
    user: UserInfo,
    folder: Path,
    training: TorchTraining,
    sampler: str,
    pruner: str,
) -> None:
    spec = tiny_spec(folder, n_trials=3, epochs=2, lr={"choices": [0.01, 0.02]}, pruner=pruner)
    spec["sampler"] = {"name": sampler, "seed": 3}
    if sampler in ("tpe", "cmaes"):  # the samplers with start-up trials
        spec["sampler"]["n_startup_trials"] = 1
    if sampler == "qmc":
        spec["training"]["lr"] = {"low": 0.01, "high": 0.02}
    spec["baselines"] = ["relu"]  # on a grid, one of its 4 configurations
    study, _ = store.studies.create(user, spec)
    runner = _runner(store, training)
    outcomes = []
    while (claim := store.runs.claim_next("w-test")) is not None:
        outcomes.append(runner.run(claim))
    assert len(outcomes) == 3
    assert all(o.state in ("complete", "pruned") for o in outcomes), outcomes
    runs = runs_of(store, study.id)
    assert runs[0].params and runs[0].params["activation"] == "relu"  # the baseline first
    if sampler == "grid":  # 3 of the 4 configurations, each once
        configurations = {(r.params["activation"], r.params["training.lr"]) for r in runs}
        assert len(configurations) == 3
    trials = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna).trials
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    assert store.studies.get(study.id).status == "completed"


CMAES_MISSING = (
    "this machine lacks the Python package 'cmaes' that the cmaes sampler needs: pip install cmaes"
)


def test_a_package_missing_on_the_only_machine_fails_the_study_and_the_worker_goes_on(
    store: Store,
    user: UserInfo,
    folder: Path,
    training: TorchTraining,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A CMA-ES study on a machine without the cmaes package, the only machine with a worker.
    monkeypatch.setitem(sys.modules, "cmaes", None)  # `import cmaes` fails, as where it is absent
    broken, _ = store.studies.create(
        user, tiny_spec(folder, n_trials=2, sampler="cmaes", priority=5)
    )
    fine, _ = store.studies.create(user, tiny_spec(folder, n_trials=1))
    runner = _runner(store, training)
    outcomes = []
    while (claim := store.runs.claim_next("w-test")) is not None:
        outcome = runner.run(claim)
        outcomes.append((claim.study_id, outcome.state, outcome.skip_study))
    info = store.studies.get(broken.id)
    assert info.status == "failed"
    assert info.error and info.error.startswith(CMAES_MISSING), info.error
    assert "Optuna could not create a trial" not in info.error
    assert runs_of(store, broken.id) == []
    trials = optuna.load_study(study_name=broken.optuna_name, storage=store.db.optuna).trials
    assert trials == []  # refused before Optuna made a trial
    assert outcomes == [(broken.id, "released", False), (fine.id, "complete", False)]


def test_a_package_missing_on_one_machine_leaves_the_study_to_the_others(
    store: Store,
    user: UserInfo,
    folder: Path,
    training: TorchTraining,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Packages belong to a machine, like data: host-a lacking cmaes must not fail a CMA-ES study
    # that host-b, which has it, can run.
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=1, sampler="cmaes"))
    on_a = _runner(store, training, "w-a", hostname="host-a")
    on_b = _runner(store, training, "w-b", hostname="host-b")
    claim = store.runs.claim_next("w-a")
    assert claim is not None
    with monkeypatch.context() as host_a:
        host_a.setitem(sys.modules, "cmaes", None)
        outcome = on_a.run(claim)
    assert outcome.state == "released" and outcome.skip_study
    assert outcome.reason and outcome.reason.startswith(CMAES_MISSING)
    info = store.studies.get(study.id)
    assert info.status in ("queued", "running") and runs_of(store, study.id) == []
    assert info.error and "host-a cannot run this study" in info.error
    assert CMAES_MISSING in info.error and "left to the workers on host-b" in info.error
    claim = store.runs.claim_next("w-b")
    assert claim is not None
    assert on_b.run(claim).state == "complete"  # host-b has cmaes: the study runs there
    assert store.studies.get(study.id).status == "completed"
    (run,) = runs_of(store, study.id)
    assert run.state == "complete"


def test_an_import_optuna_defers_is_named_by_the_module_it_could_not_import() -> None:
    # Optuna's optional imports (optuna._imports.try_import) raise a plain ImportError whose
    # cause names the module.
    with optuna._imports.try_import() as imports:
        import actsearch_no_such_package  # noqa: F401
    with pytest.raises(ImportError) as info:
        imports.check()
    spec = parse_spec({"name": "t", "activations": {"relu": {}}, "pruner": {"name": "none"}})
    message = missing_package_message(info.value, spec)
    assert message.startswith(
        "this machine lacks the Python package 'actsearch_no_such_package' that the tpe "
        "sampler or the none pruner needs: pip install actsearch_no_such_package (ImportError: "
    )
    unnamed = missing_package_message(ImportError("cannot import name 'x'"), spec)
    assert unnamed.startswith("this machine cannot import what the tpe sampler or the none")


def test_a_study_optuna_cannot_create_a_trial_for_is_failed_for_every_machine(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    # Not a machine's lack: another live machine would meet the same refusal, so the study fails
    # at once (here its Optuna study is gone from the database).
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=2))
    on_a = _runner(store, training, "w-a", hostname="host-a")
    _runner(store, training, "w-b", hostname="host-b")  # live, never asked
    claim = store.runs.claim_next("w-a")
    assert claim is not None
    optuna.delete_study(study_name=study.optuna_name, storage=store.db.optuna)
    outcome = on_a.run(claim)
    assert outcome.state == "released" and not outcome.skip_study
    info = store.studies.get(study.id)
    assert info.status == "failed"
    assert info.error and info.error.startswith("Optuna could not create a trial: KeyError")
    assert runs_of(store, study.id) == []


@pytest.mark.parametrize("public_path", [False, True], ids=["tell-body", "public-tell"])
def test_tell_optuna_finishes_trials_and_skips_finished_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, public_path: bool
) -> None:
    if public_path:  # an Optuna without `_tell_with_warning`
        monkeypatch.setattr(optuna_access, "_tell_with_warning", None)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, direction="maximize")
    done, pruned, lost, bad = (study.ask() for _ in range(4))
    pruned.report(0.25, 0)
    study.tell(lost, state=TrialState.FAIL)  # e.g. reaped meanwhile
    tell_optuna(study, done, 0.75, None)
    tell_optuna(study, pruned, None, TrialState.PRUNED)
    tell_optuna(study, lost, 0.5, None)  # already finished: skipped, not an error
    tell_optuna(study, bad, None, None)  # no finite value: failed, as Study.tell does
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL,
    ]  # fmt: skip
    assert trials[0].value == 0.75 and trials[1].value == 0.25 and trials[2].value is None


def test_a_run_and_its_trials_end_are_stored_in_one_transaction(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    """The trial's end is written with the run's outcome: the run is stored synced, nothing is
    left for the next claim or the reconciler; its parameters and reported values are there."""
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=1, epochs=2))
    runner = _runner(store, training)
    claim = store.runs.claim_next("w-test")
    assert claim is not None
    commits: list[str] = []
    event.listen(store.db.engine, "commit", lambda *_: commits.append("ours"))
    assert runner.run(claim).state == "complete"
    assert runner.told == []
    (run,) = runs_of(store, study.id)
    assert run.optuna_synced
    (trial,) = optuna.load_study(study_name=claim.optuna_name, storage=store.db.optuna).trials
    assert (trial.state, trial.value) == (TrialState.COMPLETE, run.value)
    assert trial.params == run.params
    assert sorted(trial.intermediate_values) == [0, 1]
    second = store.studies.create(user, tiny_spec(folder, n_trials=1, epochs=2))[0]
    sent: list[str] = []  # what Optuna's own connections send
    event.listen(store.db.optuna.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    commits.clear()
    claim = store.runs.claim_next("w-test", study_ids=[second.id])
    assert claim is not None and runner.run(claim).state == "complete"
    # Claim, attach (+ parameters), 2 epochs (+ reported values), 1 training's claim and
    # result, outcome (+ end): Optuna's own transactions are only its trial's creation and reads.
    assert len(commits) == 7
    writes = [s.split(" ")[:3] for s in sent if s.lstrip().startswith(("INSERT", "UPDATE"))]
    assert writes == [["INSERT", "INTO", "trials"], ["UPDATE", "trials", "SET"]]  # its creation
    assert runs_of(store, second.id)[0].optuna_synced


def test_without_held_writes_a_told_run_is_marked_synced_by_the_next_claim(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining, monkeypatch: Any
) -> None:
    """A storage that cannot hold Optuna's writes: the runner tells Optuna after the outcome
    and notes it; the worker's next claim records it (no transaction of its own)."""
    monkeypatch.setattr(optuna_access, "_BATCH_PARAMS", False)
    monkeypatch.setattr(optuna_access, "_HOLDING", ())
    study, _ = store.studies.create(user, tiny_spec(folder, n_trials=2, epochs=1))
    runner = _runner(store, training)
    first = store.runs.claim_next("w-test")
    assert first is not None
    assert runner.run(first).state == "complete"
    assert runner.told == [first.run_id]
    (told,) = runs_of(store, study.id)
    assert not told.optuna_synced  # until the next claim (or the reconciler) records it
    second = store.runs.claim_next("w-test", synced=runner.told)
    assert second is not None
    synced = {run.id: run.optuna_synced for run in runs_of(store, study.id)}
    assert synced[first.run_id]
    store.runs.mark_synced([])  # nothing to record: no statement, no error
