"""No identical training twice (issue 17), with real worker processes on SQLite and PostgreSQL.

Every trial of these studies is the same configuration (one family, nothing searched), the case
where TPE keeps drawing a parameter-free family: `repeats: reseed` trains each repeat with the
next unused seed, `repeats: reuse` takes the recorded result, and `reuse: team` takes another
study's. Racing workers, in one study or in two, train a configuration and seed once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import select
from worker_helpers import (
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

from service.db import Training
from service.store import Store

pytestmark = [pytest.mark.slow]


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


def _spec(folder: Path, n_trials: int, **fields: Any) -> dict[str, Any]:
    spec = tiny_spec(folder, n_trials=n_trials, activations={"relu": {}}, lr=0.02)
    return {**spec, **fields}


def _trainings(store: Store, study_id: int | None = None) -> list[Training]:
    query = select(Training).order_by(Training.id)
    if study_id is not None:
        query = query.where(Training.study_id == study_id)
    with store.db.session() as session:
        return list(session.scalars(query))


def _run_to_completion(
    store: Store, url: str, home: Path, study_ids: list[int], slots: int = 1
) -> None:
    env = worker_env(url, home, heartbeat_s=0.5)
    log = home / "worker.log"
    args = ["--gpus", "cpu", "--per-gpu", str(slots)]
    with worker_processes(args, env, log):
        for study_id in study_ids:
            wait_for(
                lambda study_id=study_id: store.studies.get(study_id).status == "completed",
                240,
                f"study {study_id} to complete\n{log_text(log)[-3000:]}",
            )


def _optuna_values(store: Store, name: str) -> list[float | None]:
    study = optuna.load_study(study_name=name, storage=store.db.optuna)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    return [t.value for t in study.trials]


@pytest.mark.parametrize("slots", [1, 2], ids=["one-worker", "two-racing"])
def test_reseed_trains_each_repeat_with_a_fresh_seed(
    tmp_path: Path, folder: Path, url: str, slots: int
) -> None:
    store = open_store(url)
    study, _ = store.studies.create(make_user(store), _spec(folder, 3, repeats="reseed"))
    _run_to_completion(store, url, tmp_path, [study.id], slots)
    runs = [r for r in runs_of(store, study.id) if r.state == "complete"]
    trainings = _trainings(store, study.id)
    assert len(runs) == 3 and all(r.reused_from_run is None for r in runs)
    assert sorted(t.seed for t in trainings) == [0, 1, 2]  # one configuration, three seeds
    assert len({t.key for t in trainings}) == 3 and {t.state for t in trainings} == {"complete"}
    assert sorted(r.config["seed"] for r in runs) == [0, 1, 2]  # the run says what it trained
    assert len({t.config_key for t in trainings}) == 1
    store.dispose()


@pytest.mark.parametrize("slots", [1, 2], ids=["one-worker", "two-racing"])
def test_reuse_trains_once_and_tells_the_recorded_value(
    tmp_path: Path, folder: Path, url: str, slots: int
) -> None:
    store = open_store(url)
    study, _ = store.studies.create(make_user(store), _spec(folder, 3, repeats="reuse"))
    _run_to_completion(store, url, tmp_path, [study.id], slots)
    (training,) = _trainings(store, study.id)  # one training, not three
    runs = [r for r in runs_of(store, study.id) if r.state == "complete"]
    trained = [r for r in runs if r.reused_from_run is None]
    reused = [r for r in runs if r.reused_from_run is not None]
    assert len(trained) == 1 and len(reused) == 2 and training.run_id == trained[0].id
    assert all(r.reused_from_run == trained[0].id for r in reused)
    assert all(r.value == trained[0].value for r in reused)
    assert all(r.record and r.record["reused"]["run_id"] == trained[0].id for r in reused)
    assert _optuna_values(store, study.optuna_name) == [trained[0].value] * 3
    store.dispose()


def test_team_reuse_two_studies_racing_train_once(tmp_path: Path, folder: Path, url: str) -> None:
    store = open_store(url)
    user = make_user(store)
    spec = _spec(folder, 1, repeats="reuse", reuse="team")
    first, _ = store.studies.create(user, {**spec, "name": "first"})
    second, _ = store.studies.create(user, {**spec, "name": "second"})
    _run_to_completion(store, url, tmp_path, [first.id, second.id], slots=2)
    trainings = _trainings(store)
    originals = [t for t in trainings if t.reused_from is None]
    copies = [t for t in trainings if t.reused_from is not None]
    assert len(originals) == 1 and len(copies) == 1  # one training for the two studies
    assert copies[0].reused_from == originals[0].id and copies[0].study_id != originals[0].study_id
    assert copies[0].val_acc == originals[0].val_acc
    runs = runs_of(store, first.id) + runs_of(store, second.id)
    assert sorted(r.reused_from_run is None for r in runs) == [False, True]
    store.dispose()


def test_team_reuse_is_exact_and_study_scope_is_private(
    tmp_path: Path, folder: Path, url: str
) -> None:
    store = open_store(url)
    user = make_user(store)
    spec = _spec(folder, 1, repeats="reuse", reuse="team")
    base, _ = store.studies.create(user, {**spec, "name": "base"})
    _run_to_completion(store, url, tmp_path, [base.id])
    other_budget = {**spec, "name": "two epochs", "training": {**spec["training"], "epochs": 2}}
    private = {**spec, "name": "private", "reuse": "study"}
    longer, _ = store.studies.create(user, other_budget)
    alone, _ = store.studies.create(user, private)
    _run_to_completion(store, url, tmp_path, [longer.id, alone.id])
    # Another budget is another training; a study-scoped study does not look beyond itself.
    assert all(t.reused_from is None for t in _trainings(store))
    assert len(_trainings(store)) == 3
    store.dispose()
