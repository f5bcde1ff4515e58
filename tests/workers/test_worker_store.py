"""The run store as the workers use it, on SQLite and PostgreSQL: budgets, retries, release."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import PGBOUNCER, POSTGRES, database_url
from sqlalchemy import func, update
from worker_helpers import (
    create_pg_database,
    drop_pg_database,
    make_user,
    open_store,
    runs_of,
    tiny_spec,
)

from service.db import Run, Study, Worker, utcnow
from service.store import Store, UserInfo
from service.store import base as base_module
from service.store import runs as runs_module
from service.store.queries import list_workers
from workers.worker import open_worker_store


@pytest.fixture(params=["sqlite", POSTGRES, PGBOUNCER])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: SQLite, PostgreSQL, and PostgreSQL through a transaction pooler."""
    yield from database_url(request.param, tmp_path, request)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    """The migrated store."""
    store = open_store(url)
    yield store
    store.dispose()


@pytest.fixture
def user(store: Store) -> UserInfo:
    """A study owner."""
    return make_user(store)


def _study(store: Store, user: UserInfo, n_trials: int, **kwargs: object) -> int:
    study, _ = store.studies.create(user, tiny_spec(Path("/nowhere"), n_trials=n_trials, **kwargs))
    return study.id


def test_racing_claims_never_exceed_the_budget(url: str, store: Store, user: UserInfo) -> None:
    n_trials, racers = 25, 8
    study_id = _study(store, user, n_trials)
    claimed: list[int] = []
    errors: list[BaseException] = []

    def race(index: int) -> None:
        # Each racer has its own engines and connections, like a worker process.
        mine = open_worker_store(url)
        try:
            while (claim := mine.runs.claim_next(f"w{index}")) is not None:
                claimed.append(claim.run_id)
                mine.runs.finish(claim.run_id, state="complete", value=0.5)
        except BaseException as error:
            errors.append(error)
        finally:
            mine.dispose()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(claimed) == len(set(claimed)) == n_trials
    runs = runs_of(store, study_id)
    assert len(runs) == n_trials and all(r.state == "complete" for r in runs)
    assert store.studies.get(study_id).status == "completed"


def test_a_lost_attempt_hands_its_budget_unit_to_its_retry(store: Store, user: UserInfo) -> None:
    study_id = _study(store, user, 2)
    store.workers.register("w1", hostname="h", pid=1, device="cpu")
    first = store.runs.claim_next("w1")
    assert first is not None
    params = {"activation": "relu", "training.lr": 0.01}
    store.runs.attach_trial(
        first.run_id, trial_id=1, number=0, params=params, family="relu", config={"a": 1}
    )
    assert store.runs.reap_lost(grace_s=-1) == [first.run_id]  # silent "forever"
    retry = store.runs.claim_next("w2")
    assert retry is not None and retry.retry_of == first.run_id and retry.params == params
    assert retry.attempt == 2
    second = store.runs.claim_next("w3")
    assert second is not None and second.params is None
    assert store.runs.claim_next("w4") is None  # 2 units: the retry and the second trial
    counts = store.studies.get(study_id).counts
    assert counts["running"] == 2 and counts["failed"] == 0  # the lost attempt does not count
    lost = next(r for r in runs_of(store, study_id) if r.id == first.run_id)
    assert lost.failure_reason == "worker_lost" and not lost.counts_budget


def test_attempts_are_limited(store: Store, user: UserInfo) -> None:
    _study(store, user, 1)
    for attempt in (1, 2, 3):
        claim = store.runs.claim_next("w")
        assert claim is not None and claim.attempt == attempt
        store.runs.reap_lost(grace_s=-1)
    assert store.runs.claim_next("w") is None  # max_attempts (3) used: no fourth
    (*_, last) = runs_of(store, 1)
    assert last.state == "failed" and last.counts_budget  # the trial's unit is spent


def test_release_leaves_no_trace_and_gives_the_unit_back(store: Store, user: UserInfo) -> None:
    study_id = _study(store, user, 1)
    claim = store.runs.claim_next("w")
    assert claim is not None
    store.runs.release(claim.run_id)
    assert runs_of(store, study_id) == []
    again = store.runs.claim_next("w")
    assert again is not None and again.params is None
    store.runs.attach_trial(again.run_id, trial_id=7, number=0, params={}, family="relu", config={})
    with pytest.raises(ValueError, match="finish it instead"):
        store.runs.release(again.run_id)


def test_release_puts_a_retry_back_in_the_queue(store: Store, user: UserInfo) -> None:
    study_id = _study(store, user, 1)
    first = store.runs.claim_next("w")
    assert first is not None
    store.runs.reap_lost(grace_s=-1)
    retry = store.runs.claim_next("w")
    assert retry is not None and retry.retry_of == first.run_id
    store.runs.release(retry.run_id)
    queued = [r for r in runs_of(store, study_id) if r.state == "queued"]
    assert [r.id for r in queued] == [retry.run_id] and queued[0].worker_id is None


def test_epoch_reports_are_idempotent_and_say_when_to_stop(store: Store, user: UserInfo) -> None:
    study_id = _study(store, user, 2)
    claim = store.runs.claim_next("w")
    assert claim is not None
    values = {"train_loss": 1.0, "img_per_s": 10.0, "elapsed_s": 1.0}
    status = store.runs.report_epoch(claim.run_id, 0, val_acc=0.1, **values)
    assert status.stop_reason is None
    store.runs.report_epoch(claim.run_id, 0, val_acc=0.2, **values)  # a repeat overwrites
    (run,) = runs_of(store, study_id)
    assert run.epochs_done == 1
    store.studies.transition(study_id, "pause")  # a pause hands running trials back
    assert store.runs.report_epoch(claim.run_id, 1, val_acc=0.3, **values).stop_reason == "paused"
    store.studies.transition(study_id, "resume")
    store.studies.transition(study_id, "cancel")
    status = store.runs.report_epoch(claim.run_id, 2, val_acc=0.4, **values)
    assert status.stop_reason == "cancelled"
    with store.db.session() as session:
        session.execute(update(Run).where(Run.id == claim.run_id).values(state="failed"))
    assert store.runs.status(claim.run_id).stop_reason == "worker_lost"


def test_finish_is_stored_once_even_when_repeated(store: Store, user: UserInfo) -> None:
    study_id = _study(store, user, 1)
    store.workers.register("w", hostname="h", pid=1, device="cpu")
    claim = store.runs.claim_next("w")
    assert claim is not None
    record = {"val_acc": 0.5}
    assert store.runs.finish(claim.run_id, state="complete", value=0.5, record=record)
    # The acknowledgement was lost and the worker writes again: same outcome, nothing doubled.
    assert store.runs.finish(claim.run_id, state="complete", value=0.5, record=record)
    with store.db.session() as session:
        worker = session.get(Worker, "w")
        assert worker is not None and worker.trials_done == 1
    assert store.studies.get(study_id).status == "completed"


def test_paused_studies_are_not_claimed_until_resumed(store: Store, user: UserInfo) -> None:
    study_id = _study(store, user, 1)
    store.studies.transition(study_id, "pause")
    assert store.runs.claim_next("w") is None
    store.studies.transition(study_id, "resume")
    claim = store.runs.claim_next("w")
    assert claim is not None and claim.study_id == study_id


def test_higher_priority_first_then_round_robin(store: Store, user: UserInfo) -> None:
    low_a = _study(store, user, 5, name="a")
    low_b = _study(store, user, 5, name="b")
    high = _study(store, user, 1, name="high", priority=5)
    order = []
    for _ in range(5):
        claim = store.runs.claim_next("w")
        assert claim is not None
        order.append(claim.study_id)
    assert order[0] == high
    assert order[1:] == [low_a, low_b, low_a, low_b]
    assert store.runs.claim_next("w", study_ids=[low_b]).study_id == low_b  # type: ignore[union-attr]


@pytest.mark.postgres
def test_heartbeats_use_the_database_clock_not_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker on a machine whose clock runs an hour behind must not look silent to a reaper
    # elsewhere, nor must a silent one look alive to it: both go by PostgreSQL's clock.
    url = create_pg_database()
    store = open_store(url)
    try:
        user = make_user(store)
        _study(store, user, 2)
        behind = utcnow() - timedelta(hours=1)
        monkeypatch.setattr(runs_module, "utcnow", lambda: behind)
        monkeypatch.setattr(base_module, "utcnow", lambda: behind)
        store.workers.register("w-behind", hostname="h", pid=1, device="cpu")
        claim = store.runs.claim_next("w-behind")
        assert claim is not None
        store.runs.report_epoch(
            claim.run_id, 0, train_loss=1.0, val_acc=0.5, img_per_s=1.0, elapsed_s=1.0,
            worker_id="w-behind",
        )  # fmt: skip
        store.workers.heartbeat("w-behind", claim.run_id)
        monkeypatch.undo()
        assert store.runs.reap_lost(grace_s=60) == []
        (worker,) = list_workers(store.db, grace_s=60)
        assert worker["heartbeat_age_s"] < 60 and not worker["stale"]
        with store.db.session() as session:  # a minute and a half of silence, by the database
            session.execute(update(Run).values(heartbeat_at=func.now() - timedelta(seconds=90)))
        assert store.runs.reap_lost(grace_s=60) == [claim.run_id]
    finally:
        store.dispose()
        drop_pg_database(url)


def _age_study(store: Store, study_id: int, seconds: float) -> None:
    with store.db.session() as session:
        session.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(started_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_study_past_its_time_limit_takes_no_new_trial_and_completes(
    store: Store, user: UserInfo
) -> None:
    spec = tiny_spec(Path("/nowhere"), n_trials=5)
    spec["timeouts"] = {"study_s": 60}
    study, _ = store.studies.create(user, spec)
    first = store.runs.claim_next("w1")
    second = store.runs.claim_next("w2")
    assert first is not None and second is not None
    store.runs.reap_lost(grace_s=-1)  # both lost: two retries wait in the queue
    again = store.runs.claim_next("w3")
    assert again is not None and again.retry_of is not None
    _age_study(store, study.id, 61)
    assert store.runs.claim_next("w4") is None  # neither a new trial nor the other retry
    (waiting,) = [r for r in runs_of(store, study.id) if r.state == "cancelled"]
    assert waiting.failure_reason == "time_limit"
    assert store.studies.get(study.id).status == "running"  # one run still trains
    store.runs.finish(again.run_id, state="complete", value=0.5)
    info = store.studies.get(study.id)
    assert info.status == "completed"
    assert info.error is not None and "timeouts.study_s = 60 s" in info.error


def test_a_study_within_its_time_limit_runs_its_whole_budget(store: Store, user: UserInfo) -> None:
    spec = tiny_spec(Path("/nowhere"), n_trials=2)
    spec["timeouts"] = {"study_s": 3600}
    study, _ = store.studies.create(user, spec)
    for _ in range(2):
        claim = store.runs.claim_next("w")
        assert claim is not None
        store.runs.finish(claim.run_id, state="complete", value=0.5)
    info = store.studies.get(study.id)
    assert info.status == "completed" and info.error is None
