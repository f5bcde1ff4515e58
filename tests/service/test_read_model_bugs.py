"""Bugs of the read side: retry chains that loop, importance that reads one trial, a cache that grows.

Each runs on SQLite and PostgreSQL with real studies, real Optuna trials and, where the bug lives
in bad data, rows written straight into the table.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sqlalchemy import insert, update

from service.dashboard import queries
from service.dashboard.importance import ImportanceCache, family_distributions
from service.db import Run, RunState
from service.store import Store
from tests.service.conftest import add_trial, new_person, spec

pytestmark = pytest.mark.timeout(120)


# -- the retry chain of a trial ---------------------------------------------------------------
def _runs_pointing_at_each_other(store: Store, study_id: int, number: int, ids: int) -> list[int]:
    """`ids` runs of trial `number`, each the retry of the next and the last of the first."""
    with store.db.session() as session:
        run_ids = [
            session.execute(
                insert(Run)
                .values(
                    study_id=study_id,
                    trial_number=number,
                    attempt=i + 1,
                    state="failed",
                    family="relu",
                    counts_budget=False,
                    epochs_done=0,
                )
                .returning(Run.id)
            ).scalar_one()
            for i in range(ids)
        ]
        for run_id, parent in zip(run_ids, run_ids[1:] + run_ids[:1], strict=True):
            session.execute(update(Run).where(Run.id == run_id).values(retry_of=parent))
    return run_ids


@pytest.mark.parametrize("ids", [1, 2, 3], ids=["self", "pair", "triangle"])
def test_a_retry_cycle_in_the_data_still_shows_the_trial(
    client: TestClient, store: Store, ids: int
) -> None:
    """retry_of links forming a cycle (a run its own retry, two or three in a ring) end the walk."""
    owner = new_person(store, "cycle")
    study, _ = store.studies.create(owner.info, spec())
    run_ids = _runs_pointing_at_each_other(store, study.id, 7, ids)
    response = client.get(f"/api/v1/studies/{study.id}/trials/7", headers=owner.headers)
    assert response.status_code == 200, response.text
    assert sorted(a["run_id"] for a in response.json()["attempts"]) == run_ids


# -- parameter importance --------------------------------------------------------------------
def _smu_trial(
    store: Store, study_id: int, value: float, alpha: float, optuna_knows_alpha: bool
) -> None:
    """A complete smu trial whose Optuna record has (or lacks) the smu.alpha distribution."""
    claim = store.runs.claim_next("w-importance", [study_id])
    assert claim is not None
    distributions: dict[str, Any] = {"activation": CategoricalDistribution(["relu", "smu"])}
    params: dict[str, Any] = {"activation": "smu"}
    if optuna_knows_alpha:
        distributions["smu.alpha"] = FloatDistribution(0.0, 0.5)
        params["smu.alpha"] = alpha
    study = optuna.load_study(study_name=claim.optuna_name, storage=store.db.optuna)
    study.add_trial(
        optuna.trial.create_trial(params=params, distributions=distributions, value=value)
    )
    frozen = study.get_trials(deepcopy=False)[-1]
    store.runs.attach_trial(
        claim.run_id, trial_id=frozen._trial_id, number=frozen.number,
        params={"activation": "smu", "smu.alpha": alpha}, family="smu", config=None,
    )  # fmt: skip
    store.runs.finish(claim.run_id, state="complete", value=value)


def test_distributions_come_from_the_next_best_trial_when_the_best_lacks_one(
    store: Store,
) -> None:
    """The best trial's Optuna record lacks smu.alpha: the next best's range is used, not one
    guessed from the values."""
    owner = new_person(store, "importance")
    study, _ = store.studies.create(owner.info, spec(n_trials=10))
    _smu_trial(store, study.id, 0.95, 0.45, optuna_knows_alpha=False)  # the best
    for value, alpha in ((0.90, 0.40), (0.85, 0.30), (0.80, 0.20)):
        _smu_trial(store, study.id, value, alpha, optuna_knows_alpha=True)
    assert len(queries.best_trial_ids(store.db, study.id, "smu")) == 4  # best first, several
    assert len(queries.best_trial_ids(store.db, study.id, "smu", limit=2)) == 2
    rows = queries.family_params(store.db, study.id, "smu")
    found = family_distributions(store.db, study.id, "smu", rows)
    assert found["smu.alpha"] == FloatDistribution(0.0, 0.5)  # the spec's range, as Optuna had it
    assert found["activation"] == CategoricalDistribution(["relu", "smu"])


def _study_with_families(store: Store, families: list[str]) -> int:
    owner = new_person(store, "cache")
    study, _ = store.studies.create(owner.info, spec(n_trials=10))
    for family in families:
        add_trial(store, study.id, family=family, value=0.5)
    return study.id


def test_the_importance_cache_is_bounded_and_forgets_what_is_gone(store: Store) -> None:
    cache = ImportanceCache(max_entries=3)
    first = _study_with_families(store, ["relu", "smu", "gelu"])
    second = _study_with_families(store, ["relu", "elu"])
    cache.for_study(store.db, first)
    assert len(cache) == 3
    cache.for_study(store.db, second)
    # The least recently used go first: one of the first study's stays.
    assert cache.entries() == [
        (store.db.url, first, "smu"), (store.db.url, second, "elu"), (store.db.url, second, "relu")
    ]  # fmt: skip

    # A family without complete trials any more loses its entry.
    with store.db.session() as session:
        session.execute(
            update(Run)
            .where(Run.study_id == second, Run.family == "elu")
            .values(state=RunState.FAILED)
        )
    cache.for_study(store.db, second)
    assert (store.db.url, second, "elu") not in cache.entries()

    # A deleted study's entries go at the next call for any study of that database.
    store.studies.delete(first)
    cache.for_study(store.db, second)
    assert cache.entries() == [(store.db.url, second, "relu")]
