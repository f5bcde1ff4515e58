"""Multi-objective studies (spec `objectives`): the worker measures the cost and tells Optuna
[accuracy, cost]; the reconciler tells the same from our tables. Real store, Optuna, training."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from worker_helpers import (
    create_pg_database,
    drop_pg_database,
    epochs_of,
    make_image_folder,
    make_user,
    open_store,
    runs_of,
    tiny_spec,
)

from search_space.contract import TrialConfig
from search_space.optuna_access import trial_id_of
from service.app import create_app
from service.settings import Settings
from service.store import Cost, Store, UserInfo
from service.store.queries.pareto import ParetoPoint, pareto, pareto_front
from service.store.reconcile import Reconciler
from workers.cost import CostMeter, relu_copy
from workers.options import SlotOptions
from workers.torch_training import TorchTraining
from workers.trial_runner import TrialRunner


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image folder shared by this module's studies."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = create_pg_database()
    store = open_store(url)
    yield store
    store.dispose()
    if request.param != "sqlite":
        drop_pg_database(url)


@pytest.fixture
def user(store: Store) -> UserInfo:
    """A study owner."""
    return make_user(store)


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> TorchTraining:
    """The real training side on the CPU (its ReLU references kept, as in a worker process)."""
    return TorchTraining(Settings(home=tmp_path_factory.mktemp("home")), SlotOptions(threads=1))


def cost_spec(folder: Path, cost: str, n_trials: int, **fields: Any) -> dict[str, Any]:
    """A tiny study minimising `cost` beside accuracy."""
    spec = tiny_spec(folder, n_trials=n_trials, sampler="tpe", **fields)
    return {**spec, "objectives": ["accuracy", cost], "sampler": {"name": "tpe", "seed": 1}}


def run_all(store: Store, training: TorchTraining) -> None:
    """Claim and run every run of the queue in this process, as one worker slot does."""
    store.workers.register("w-cost", hostname="test", pid=1, device="cpu")
    runner = TrialRunner(
        store=store, settings=Settings(), worker_id="w-cost", training=training, hostname="test"
    )
    while (claim := store.runs.claim_next("w-cost")) is not None:
        runner.run(claim)


def optuna_trials(store: Store, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=store.db.optuna).get_trials(deepcopy=False)


@pytest.mark.parametrize("cost", ["params", "step_time"])
def test_the_worker_measures_the_cost_and_tells_optuna_both_values(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining, cost: str
) -> None:
    study, _ = store.studies.create(user, cost_spec(folder, cost, n_trials=2, epochs=2))
    run_all(store, training)
    runs = runs_of(store, study.id)
    assert [r.state for r in runs] == ["complete", "complete"]
    by_number = {t.number: t for t in optuna_trials(store, study.optuna_name)}
    for run in runs:
        assert run.cost_kind == cost and run.cost is not None and run.cost > 0
        assert run.cost_device is not None and run.cost_device.startswith("cpu")
        recorded = run.record["cost"]
        assert recorded["kind"] == cost and recorded["value"] == run.cost
        assert recorded["device"] == run.cost_device
        trial = by_number[run.trial_number]
        assert trial.state == TrialState.COMPLETE
        assert trial.values == pytest.approx([run.value, run.cost])
        assert trial.intermediate_values == {}  # Optuna cannot take a multi-objective report
        assert [e.epoch for e in epochs_of(store, run.id)] == [0, 1]  # our curve is stored
        if cost == "params":
            assert run.cost == run.record["param_count"]
        else:
            step_s = run.record["train_s"] / run.record["train_steps"]
            assert recorded["step_s"] == pytest.approx(step_s)
            assert run.cost == pytest.approx(step_s / recorded["relu_step_s"])


def test_the_parameter_count_includes_the_activation_parameters(
    store: Store, user: UserInfo, folder: Path, training: TorchTraining
) -> None:
    activations = {"relu": {}, "prelu": {"scope": "per_channel"}}
    spec = cost_spec(folder, "params", n_trials=2, activations=activations)
    study, _ = store.studies.create(user, {**spec, "baselines": ["relu", "prelu"]})
    run_all(store, training)
    counts = {r.family: r.cost for r in runs_of(store, study.id)}
    assert counts["prelu"] is not None and counts["relu"] is not None
    assert counts["prelu"] > counts["relu"]  # one slope per channel of each activation site


def test_the_relu_reference_is_timed_once_per_model_and_device(folder: Path) -> None:
    meter = CostMeter(torch.device("cpu"))
    config = TrialConfig.model_validate(
        {
            "model": {"name": "lenet", "width": 0.25},
            "training": {"epochs": 3, "batch_size": 16, "lr": 0.01},
            "activation": {"family": "silu"},
        }
    )
    data = TorchTraining(Settings(home=folder.parent), SlotOptions(threads=1)).load_data(
        TrialConfig.model_validate(
            {"dataset": {"name": "folder", "path": str(folder), "val_size": 20}}
        ).dataset
    )
    first = meter.relu_step_s(config, data)
    other_lr = config.model_copy(
        update={"training": config.training.model_copy(update={"lr": 0.05})}
    )
    assert meter.relu_step_s(other_lr, data) == first  # the same step: the kept reference
    assert relu_copy(config).activation.family == "relu"
    assert first > 0


def test_the_reconciler_tells_optuna_accuracy_and_cost(
    store: Store, user: UserInfo, folder: Path
) -> None:
    study, _ = store.studies.create(user, cost_spec(folder, "params", n_trials=1))
    claim = store.runs.claim_next("w-lost")
    assert claim is not None
    optuna_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    trial = optuna_study.ask()
    store.runs.attach_trial(
        claim.run_id,
        trial_id=trial_id_of(trial),
        number=trial.number,
        params={},
        family="relu",
        config=None,
    )
    # The worker stored its outcome and died before telling Optuna.
    assert store.runs.finish(
        claim.run_id, state="complete", value=0.5, cost=Cost("params", 1234.0, "cpu (test)")
    )
    report = Reconciler(store.db, settle_s=0.0).sweep()
    assert report.synced == [claim.run_id]
    (told,) = optuna_trials(store, study.optuna_name)
    assert told.state == TrialState.COMPLETE and told.values == [0.5, 1234.0]


def test_the_pareto_front_is_optunas_best_trials(
    store: Store, folder: Path, training: TorchTraining, tmp_path: Path
) -> None:
    user, token = store.users.create("pareto")
    activations = {"relu": {}, "leaky_relu": {}, "prelu": {}, "silu": {}}
    spec = cost_spec(folder, "params", n_trials=6, activations=activations)
    spec["model"] = {"name": "lenet", "width": {"choices": [0.125, 0.25, 0.5]}}
    study, _ = store.studies.create(user, spec)
    run_all(store, training)
    best = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna).best_trials
    view = pareto(store.db, study.id)
    assert view.cost_kind == "params" and len(view.points) == 6
    assert sorted((p.number, [p.value, p.cost]) for p in view.front) == sorted(
        (t.number, t.values) for t in best
    )
    assert [p.cost for p in view.front] == sorted(p.cost for p in view.front)
    assert {p.number for p in view.points if p.on_front} == {t.number for t in best}
    url = str(store.db.engine.url.render_as_string(hide_password=False))
    settings = Settings(database_url=url, home=tmp_path, session_secret="s" * 32)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, store, reap_interval_s=None)) as client:
        answer = client.get(f"/api/v1/studies/{study.id}/pareto", headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [(p["number"], p["value"], p["cost"]) for p in body["front"]] == [
            (p.number, p.value, p.cost) for p in view.front
        ]
        assert body["cost_unit"] == "parameters" and body["devices"][0].startswith("cpu")
        exported = client.get(f"/api/v1/studies/{study.id}/export.json", headers=headers).json()
        flagged = {t["number"] for t in exported["trials"] if t["on_front"]}
        assert flagged == {t.number for t in best}
        text = client.get(f"/api/v1/studies/{study.id}/export.csv", headers=headers).text
        header = text.splitlines()[0].split(",")
        assert header[header.index("on_front") - 3 : header.index("on_front")] == [
            "cost", "cost_kind", "cost_device",
        ]  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_the_front_agrees_with_optuna_on_ties_and_duplicates(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = [[float(rng.integers(0, 6)) / 5, float(rng.integers(1, 6))] for _ in range(40)]
    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, (value, cost) in enumerate(values):
        study.add_trial(optuna.trial.create_trial(values=[value, cost]))
        assert study.trials[-1].number == number
    points = [
        ParetoPoint(n, n, None, None, value, cost, None) for n, (value, cost) in enumerate(values)
    ]
    ours = sorted((p.number, [p.value, p.cost]) for p in pareto_front(points))
    assert ours == sorted((t.number, t.values) for t in study.best_trials)
