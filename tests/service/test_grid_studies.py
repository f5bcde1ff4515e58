"""Grid studies with baselines: submitted through the API, run by the real trial runner.

The runner is the worker's own (workers.trial_runner.TrialRunner: claim, Optuna ask/tell, every
store write, real training of a tiny LeNet on a tiny generated image folder on the CPU).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest

from service.settings import Settings
from service.store import Store
from tests.service.conftest import Person, spec
from tests.workers.worker_helpers import make_image_folder
from workers.options import SlotOptions
from workers.torch_training import TorchTraining
from workers.trial_runner import TrialRunner

pytestmark = pytest.mark.timeout(300)

GRID_SPEC = spec(
    name="grid",
    training={"epochs": 1, "lr": {"choices": [0.01, 0.02]}},
    activations={"relu": {}, "elu": {"alpha": {"choices": [0.5, 1.0]}}},
    baselines=["relu", "elu"],
    sampler={"name": "grid", "seed": 3},
    pruner={"name": "none"},
)
# lr × (relu + elu × alpha): 2 × (1 + 2) configurations. The baselines are two of them: their
# family defaults (elu alpha 1.0) at the training defaults' nearest grid values (lr 0.1 → 0.02).
CONFIGURATIONS = 6
BASELINES = [
    {"training.lr": 0.02, "activation": "relu"},
    {"training.lr": 0.02, "activation": "elu", "elu.alpha": 1.0},
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image folder the grid's trials really train on."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> TorchTraining:
    """The real training side on the CPU, its data cache shared by this module."""
    return TorchTraining(Settings(home=tmp_path_factory.mktemp("home")), SlotOptions(threads=1))


def grid_spec(folder: Path, n_trials: int) -> dict[str, Any]:
    """GRID_SPEC on the tiny folder, with a LeNet small enough to train in a blink."""
    return {
        **GRID_SPEC,
        "dataset": {"name": "folder", "path": str(folder), "val_size": 20},
        "model": {"name": "lenet", "width": 0.25},
        "training": {**GRID_SPEC["training"], "batch_size": 50, "eval_batch_size": 200},
        "n_trials": n_trials,
    }


def _run_all(store: Store, settings: Settings, training: TorchTraining, study_id: int) -> list[str]:
    """Claim and run the study's trials like a worker until none is left; their outcomes."""
    worker_id = f"w-grid-{study_id}"
    store.workers.register(worker_id, hostname="test", pid=1, device="cpu")
    runner = TrialRunner(store=store, settings=settings, worker_id=worker_id, training=training)
    outcomes = []
    while (claim := store.runs.claim_next(worker_id, [study_id])) is not None:
        outcomes.append(runner.run(claim).state)
        assert len(outcomes) <= 100, "the study never ends"
    return outcomes


def _trials(store: Store, study_id: int) -> list[optuna.trial.FrozenTrial]:
    name = store.studies.get(study_id).optuna_name
    return optuna.load_study(study_name=name, storage=store.db.optuna).trials


def _key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


@pytest.mark.parametrize("n_trials", [50, CONFIGURATIONS])
def test_grid_with_baselines_runs_each_configuration_once_and_completes(
    client: httpx.Client,
    store: Store,
    settings: Settings,
    alice: Person,
    folder: Path,
    training: TorchTraining,
    caplog: pytest.LogCaptureFixture,
    n_trials: int,
) -> None:
    # Before: Optuna 5's GridSampler refused the baselines ("All parameters must be specified"),
    # each failing a trial; past the grid it re-ran configurations until n_trials; its
    # study.stop() raised in every worker's last tell; relu ran once per value of elu.alpha.
    response = client.post(
        "/api/v1/studies", json=grid_spec(folder, n_trials), headers=alice.headers
    )
    assert response.status_code == 201, response.text
    study = response.json()
    assert study["n_trials"] == CONFIGURATIONS  # the budget: the grid, not the larger n_trials
    assert study["progress"]["budget"] == CONFIGURATIONS

    with caplog.at_level(logging.WARNING):
        outcomes = _run_all(store, settings, training, study["id"])
    assert outcomes == ["complete"] * CONFIGURATIONS
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

    trials = _trials(store, study["id"])
    assert [t.params for t in trials[:2]] == BASELINES  # the baselines first
    configurations = {_key(t.params) for t in trials}
    assert len(trials) == len(configurations) == CONFIGURATIONS  # each exactly once
    assert {p["activation"] for p in map(dict, configurations)} == {"relu", "elu"}
    detail = client.get(f"/api/v1/studies/{study['id']}", headers=alice.headers).json()
    assert detail["status"] == "completed"
    assert detail["progress"]["complete"] == CONFIGURATIONS
    assert detail["progress"]["queued"] == 0
    assert detail["spec"]["n_trials"] == n_trials  # the spec is kept as submitted


def test_grid_budget_below_its_size_runs_baselines_then_distinct_configurations(
    client: httpx.Client,
    store: Store,
    settings: Settings,
    alice: Person,
    folder: Path,
    training: TorchTraining,
) -> None:
    response = client.post("/api/v1/studies", json=grid_spec(folder, 4), headers=alice.headers)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    assert _run_all(store, settings, training, study_id) == ["complete"] * 4
    trials = _trials(store, study_id)
    assert [t.params for t in trials[:2]] == BASELINES
    assert len({_key(t.params) for t in trials}) == 4
    assert store.studies.get(study_id).status == "completed"
