"""Campaigns in the store: stages promoted exactly once, whoever advances and however often.

Trials are trained through the worker-facing store API on a known landscape
(tests/service/campaign_helpers.py), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, update

from search_space.spec import parse_spec
from service.db import Campaign, Study
from service.store import Store
from service.store.campaigns import Campaigns
from service.store.queries import leaderboard
from tests.service.campaign_helpers import (
    campaign,
    expected_top,
    stage_studies,
    train_study,
    waiting_params,
)
from tests.service.conftest import BACKENDS, Person, migrated_database, new_person

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """A database of this module's own: `advance()` moves every campaign of its database, and
    these tests count the ones it moved (on the session's database, other modules' campaigns
    and a test server's background loop move them too)."""
    with migrated_database(request.param, tmp_path_factory.mktemp("db")) as url:
        opened = Store.open(url)
        yield opened
        opened.dispose()


def _run_current_stage(store: Store, campaign_id: int) -> list[int]:
    info = store.campaigns.get(campaign_id)
    ids = [s.id for s in stage_studies(store, campaign_id, info.stage)]
    for study_id in ids:
        train_study(store, study_id)
    return ids


def _without(params: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in names}


def test_three_stages_promote_exactly_the_top_k_with_baselines_in_every_stage(
    store: Store, alice: Person
) -> None:
    info, created = store.campaigns.create(alice.info, campaign())
    assert created and info.status == "running" and info.stage == 0 and info.stage_ready
    (screen,) = stage_studies(store, info.id, 0)
    assert screen.status == "queued" and screen.stage_model == "lenet" and screen.n_trials == 14
    assert store.studies.get(screen.id).campaign_id == info.id

    # Stage 1: each family's 2 best screened configurations, lr fixed by the stage (dropped).
    _run_current_stage(store, info.id)
    assert store.campaigns.advance() == [info.id]
    assert store.campaigns.advance() == []  # nothing more to do: exactly once
    top2 = expected_top(store, [screen.id], 2, "family", {"relu"})
    (promote,) = stage_studies(store, info.id, 1)
    carried: list[dict[str, Any]] = []  # two configurations differing in lr only are one now
    for params in top2:
        if _without(params, "training.lr") not in carried:
            carried.append(_without(params, "training.lr"))
    assert promote.spec["enqueue"] == carried
    assert promote.n_trials == len(carried) + 1 and promote.spec["baselines"] == ["relu"]
    assert promote.spec["model"]["name"] == "resnet18" and promote.spec["training"]["lr"] == 0.05
    assert promote.spec["seed"] == 1  # one past the screen's only seed
    record = store.campaigns.get(info.id).promotions[0]
    assert [c["params"] for c in record["promoted"]] == top2

    # Stage 2 (transfer): the best of stage 1 per family, on two models, three fresh seeds.
    _run_current_stage(store, info.id)
    assert store.campaigns.advance() == [info.id]
    top1 = expected_top(store, [promote.id], 1, "family", {"relu"})
    confirm = stage_studies(store, info.id, 2)
    assert [s.stage_model for s in confirm] == ["resnet18", "mobilenet_v2"]
    for study in confirm:
        assert study.spec["enqueue"] == top1 and study.spec["seeds"] == 3
        assert study.spec["seed"] == 2 and study.spec["sampler"]["name"] == "random"
        fixed = waiting_params(store, study.optuna_name)
        assert fixed == [{"activation": "relu"}, *top1]  # the baseline first, each once

    _run_current_stage(store, info.id)
    assert store.campaigns.advance() == [info.id]
    done = store.campaigns.get(info.id)
    assert done.status == "completed" and done.finished_at is not None and done.error is None
    # Every stage trained the baseline; the last stage's verdicts are confirmations.
    for stage in range(3):
        for study in stage_studies(store, info.id, stage):
            board = leaderboard(store.db, study.id)
            assert board.baseline == "relu" and board.baseline_row is not None
            assert (board.confirmation_study_id == study.id) == (stage > 0)
    board = leaderboard(store.db, confirm[0].id)
    smu = next(row for row in board.rows if row.family == "smu")
    assert smu.confirmation is not None and smu.confirmation.metric == "test_acc"
    assert smu.confirmation.trainings == 3 and smu.verdict == "better"


def test_min_delta_drops_families_below_it_and_per_overall_ranks_all_together(
    store: Store, alice: Person
) -> None:
    stages = [
        {"name": "screen", "promote": {"top": 2, "per": "overall", "min_delta": 1.2}},
        {"name": "last", "seeds": 2},
    ]
    info, _ = store.campaigns.create(alice.info, campaign(stages=stages))
    (screen,) = stage_studies(store, info.id, 0)
    _run_current_stage(store, info.id)
    store.campaigns.advance()
    record = store.campaigns.get(info.id).promotions[0]
    # gelu equals relu and leaky_relu peaks at +1 point: both below 1.2 points (smu: 1.3 to 2).
    assert set(record["dropped"]) == {"gelu", "leaky_relu"}
    assert "< min_delta 1.2 pp" in record["dropped"]["gelu"]
    expected = expected_top(store, [screen.id], 2, "overall", {"relu", "gelu", "leaky_relu"})
    assert [c["params"] for c in record["promoted"]] == expected
    assert {c["family"] for c in record["promoted"]} == {"smu"}
    (last,) = stage_studies(store, info.id, 1)
    assert last.spec["enqueue"] == expected  # lr is searched in the last stage too: kept


def test_a_campaign_that_promotes_nothing_completes_saying_why(store: Store, alice: Person) -> None:
    stages = [{"promote": {"top": 1, "min_delta": 50}}, {"model": "resnet18"}]
    info, _ = store.campaigns.create(alice.info, campaign(stages=stages))
    _run_current_stage(store, info.id)
    store.campaigns.advance()
    done = store.campaigns.get(info.id)
    assert done.status == "completed" and done.stage == 0
    assert "promoted no configuration" in (done.error or "") and done.promotions


def _race(racer: Store, barrier: threading.Barrier, moved: list[list[int]]) -> None:
    barrier.wait()
    for _ in range(3):
        moved.append(racer.campaigns.advance())


def test_racing_advancers_create_each_stage_exactly_once(store: Store, alice: Person) -> None:
    """Eight stores (as eight processes would hold), released at once, advance together."""
    info, _ = store.campaigns.create(alice.info, campaign())
    stores = [Store.open(store.db.url) for _ in range(8)]
    try:
        for stage in (1, 2):
            _run_current_stage(store, info.id)
            barrier = threading.Barrier(len(stores))
            moved: list[list[int]] = []
            threads = [
                threading.Thread(target=_race, args=(racer, barrier, moved)) for racer in stores
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            with store.db.session() as session:
                counts = dict(
                    session.execute(
                        select(Study.stage, func.count())
                        .where(Study.campaign_id == info.id)
                        .group_by(Study.stage)
                    ).all()
                )
            assert counts == ({0: 1, 1: 1} if stage == 1 else {0: 1, 1: 1, 2: 2})
            assert sum(m.count(info.id) for m in moved) >= 1
            current = store.campaigns.get(info.id)
            assert current.stage == stage and current.stage_ready
            assert len(current.promotions) == stage
            for study in stage_studies(store, info.id, stage):
                enqueued = study.spec["enqueue"]
                assert waiting_params(store, study.optuna_name) == [
                    {"activation": "relu"},
                    *enqueued,
                ]
                assert study.status == "queued"
    finally:
        for racer in stores:
            racer.dispose()


def test_pause_holds_the_next_stage_until_resume_and_cancel_ends_everything(
    store: Store, alice: Person
) -> None:
    info, _ = store.campaigns.create(alice.info, campaign())
    _run_current_stage(store, info.id)
    paused = store.campaigns.transition(info.id, "pause")
    assert paused.status == "paused"
    assert store.campaigns.advance() == []  # a paused campaign does not move on
    resumed = store.campaigns.transition(info.id, "resume")
    assert resumed.status == "running"
    assert store.campaigns.advance() == [info.id]
    (promote,) = stage_studies(store, info.id, 1)
    assert promote.status == "queued"
    store.campaigns.transition(info.id, "pause")
    assert stage_studies(store, info.id, 1)[0].status == "paused"
    store.campaigns.transition(info.id, "resume")
    assert stage_studies(store, info.id, 1)[0].status == "queued"
    cancelled = store.campaigns.transition(info.id, "cancel")
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert stage_studies(store, info.id, 1)[0].status == "cancelled"
    assert store.campaigns.advance() == []


def test_a_stage_set_up_again_after_a_lost_lease_enqueues_each_configuration_once(
    store: Store, alice: Person
) -> None:
    """The setup is idempotent: run twice (a holder presumed dead), nothing is doubled."""
    info, _ = store.campaigns.create(alice.info, campaign())
    _run_current_stage(store, info.id)
    impatient = Campaigns(store.db, setup_lease_s=0.0)
    with store.db.session() as session:  # as if the process that moved the stage had died
        session.execute(
            update(Study)
            .where(Study.campaign_id == info.id, Study.stage == 0)
            .values(status="completed")
        )
    assert impatient.advance() == [info.id]
    (promote,) = stage_studies(store, info.id, 1)
    first = waiting_params(store, promote.optuna_name)
    # Set up once more, as a second process would after the lease expired.
    with store.db.session() as session:
        session.execute(update(Campaign).where(Campaign.id == info.id).values(stage_ready=False))
    assert impatient.advance() == [info.id]
    assert waiting_params(store, promote.optuna_name) == first
    assert len(first) == promote.n_trials == len(parse_spec(promote.spec).enqueue) + 1


def test_deleting_a_stage_study_alone_is_refused_and_the_campaign_takes_them_all(
    store: Store,
) -> None:
    owner = new_person(store, "owner")
    info, _ = store.campaigns.create(owner.info, campaign())
    _run_current_stage(store, info.id)
    store.campaigns.advance()
    ids = store.campaigns.study_ids(info.id)
    with pytest.raises(Exception, match="delete the campaign"):
        store.studies.delete(ids[0])
    store.campaigns.delete(info.id, store.studies)
    with store.db.session() as session:
        assert not session.scalars(select(Study.id).where(Study.id.in_(ids))).all()
    names = {s.study_name for s in store.db.optuna.get_all_studies()}
    assert not names & {f"actsearch-{i}" for i in ids}
