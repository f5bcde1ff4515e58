"""A three-stage campaign run by real worker processes on generated images, to its end by itself.

Nobody calls advance() from the test: the workers' heartbeats and two API app instances (their
background loops, each on its own store, as two API processes would be) race to move the
campaign on. Each stage must exist exactly once, seeded with exactly the top configurations of
the stage before, with the baseline in every stage; SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from worker_helpers import (
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

from service.app import create_app
from service.db import Training
from service.settings import Settings
from service.store import Store
from tests.service.campaign_helpers import expected_top, stage_studies, waiting_params

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image folder (10 classes × 12 train + 4 test PNGs)."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


def tiny_campaign(folder: Path) -> dict[str, Any]:
    """Screen 6 configurations, promote each family's best to a fixed lr, transfer the best of
    those to a second model with two seeds."""
    base = tiny_spec(
        folder,
        n_trials=6,
        name="tiny campaign",
        activations={
            "relu": {},
            "leaky_relu": {"negative_slope": {"low": 0.01, "high": 0.3}},
            "smu": {"alpha": {"low": 0.0, "high": 0.5}},
        },
    )
    base["baselines"] = ["relu"]
    base["sampler"] = {"name": "random", "seed": 7}
    base["stages"] = [
        {"name": "screen", "promote": {"top": 1, "per": "family"}},
        {"name": "promote", "training": {"lr": 0.02}, "promote": {"top": 1}},
        {
            "name": "transfer",
            "model": [{"name": "lenet", "width": 0.25}, {"name": "vgg11", "width": 0.125}],
            "seeds": 2,
        },
    ]
    return base


@contextmanager
def _api_instances(url: str, home: Path, count: int) -> Iterator[None]:
    """`count` app instances on stores of their own, their background loops running."""
    with ExitStack() as stack:
        for i in range(count):
            store = Store.open(url)
            stack.callback(store.dispose)
            settings = Settings(database_url=url, home=home / f"api{i}", session_secret="s" * 32)
            app = create_app(settings, store, reap_interval_s=0.3)
            stack.enter_context(TestClient(app))
        yield


def _check_study(store: Store, study_id: int) -> None:
    """Every trial ran once: runs and Optuna trials agree, all complete, the baseline among them."""
    info = store.studies.get(study_id)
    runs = runs_of(store, study_id)
    assert info.status == "completed" and len(runs) == info.n_trials
    assert all(r.state == "complete" for r in runs), [(r.id, r.state) for r in runs]
    trials = optuna.load_study(study_name=info.optuna_name, storage=store.db.optuna).trials
    assert sorted(t.number for t in trials) == sorted(r.trial_number for r in runs)
    assert "relu" in {r.family for r in runs}


def test_a_three_stage_campaign_runs_to_its_end_exactly_once(
    tmp_path: Path, folder: Path, url: str
) -> None:
    store = open_store(url)
    info, _ = store.campaigns.create(make_user(store), tiny_campaign(folder))
    log = tmp_path / "worker.log"
    with (
        worker_processes(
            ["--gpus", "cpu", "--per-gpu", "2"], worker_env(url, tmp_path), log
        ) as process,
        _api_instances(url, tmp_path, 2),
    ):
        wait_for(
            lambda: store.campaigns.get(info.id).status == "completed",
            420,
            "the campaign to complete",
            interval=0.5,
        )
    assert process.returncode == 0, log_text(log)[-5000:]
    assert "could not move on" not in log_text(log)  # no advance() failed in a heartbeat

    done = store.campaigns.get(info.id)
    assert done.stage == 2 and done.error is None and len(done.promotions) == 2
    stages = [stage_studies(store, info.id, stage) for stage in range(3)]
    assert [len(studies) for studies in stages] == [1, 1, 2]
    assert [s.stage_model for s in stages[2]] == ["lenet", "vgg11"]
    for studies in stages:
        for study in studies:
            _check_study(store, study.id)
    # Stage 1: the screen's best per family, its lr now fixed by the stage (not carried).
    screened = expected_top(store, [stages[0][0].id], 1, "family", {"relu"})
    carried = [{k: v for k, v in p.items() if k != "training.lr"} for p in screened]
    assert stages[1][0].spec["enqueue"] == carried
    assert waiting_params(store, stages[1][0].optuna_name) == [{"activation": "relu"}, *carried]
    # Stage 2: stage 1's best per family, on both models, two fresh seeds each.
    promoted = expected_top(store, [stages[1][0].id], 1, "family", {"relu"})
    for study in stages[2]:
        assert study.spec["enqueue"] == promoted and study.spec["seeds"] == 2
        assert waiting_params(store, study.optuna_name) == [{"activation": "relu"}, *promoted]
    # Fresh seeds: no training of the last stage has a seed an earlier stage trained.
    earlier = _trained_seeds(store, [s.id for s in stages[0] + stages[1]])
    later = _trained_seeds(store, [s.id for s in stages[2]])
    assert later and earlier and not later & earlier
    store.dispose()


def _trained_seeds(store: Store, study_ids: list[int]) -> set[int]:
    with store.db.session() as session:
        return set(session.scalars(select(Training.seed).where(Training.study_id.in_(study_ids))))
