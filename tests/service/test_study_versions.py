"""The per-study change counter (as_studies.version, migration 0008) on both databases.

Every write a read of the study shows bumps it, whoever writes (the triggers keep it); a
heartbeat or a running trial's epoch does not (polls see those through the running trials'
heartbeats instead), nor does a claim that finds no budget left.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import insert, select, text, update

from service.db import Run, Study
from service.store import Store
from tests.service.conftest import Person, add_trial, migrated_database, new_person, spec

pytestmark = pytest.mark.timeout(300)


def version(store: Store, study_id: int) -> int:
    with store.db.session() as session:
        found = session.scalar(select(Study.version).where(Study.id == study_id))
    assert found is not None
    return int(found)


def new_study(store: Store, owner: Person, **changes: Any) -> int:
    study, _ = store.studies.create(owner.info, spec(**changes))
    return study.id


def running_trial(store: Store, study_id: int, worker: str = "w-version") -> int:
    """Claim and attach one trial as a worker does; its run id."""
    claim = store.runs.claim_next(worker, [study_id])
    assert claim is not None
    study = optuna.load_study(study_name=claim.optuna_name, storage=store.db.optuna)
    trial = study.ask()
    store.runs.attach_trial(
        claim.run_id, trial_id=trial._trial_id, number=trial.number,
        params={"activation": "relu"}, family="relu", config={"activation": {"family": "relu"}},
    )  # fmt: skip
    return claim.run_id


def test_each_write_a_read_shows_bumps_the_version(store: Store) -> None:
    owner = new_person(store, "versions")
    study_id = new_study(store, owner, n_trials=3)
    seen = [version(store, study_id)]

    def bumped(what: str) -> None:
        now = version(store, study_id)
        assert now > seen[-1], f"{what} did not bump the version"
        seen.append(now)

    claim = store.runs.claim_next("w-a", [study_id])
    assert claim is not None
    bumped("a claim")
    store.runs.attach_trial(
        claim.run_id, trial_id=10_000 + claim.run_id, number=0, params={"activation": "relu"},
        family="relu", config=None,
    )  # fmt: skip
    bumped("attaching the trial")
    store.runs.finish(claim.run_id, state="complete", value=0.8, test_acc=0.79)
    bumped("finishing it")
    add_trial(store, study_id, value=0.7)
    bumped("another trial")
    store.studies.transition(study_id, "pause")
    bumped("a pause")
    store.studies.transition(study_id, "resume")
    bumped("a resume")


def test_heartbeats_and_running_epochs_leave_it(store: Store) -> None:
    owner = new_person(store, "versions")
    study_id = new_study(store, owner, n_trials=2)
    run_id = running_trial(store, study_id)
    store.workers.register("w-beat", hostname="h", pid=1, device="cpu")
    before = version(store, study_id)
    store.workers.heartbeat("w-beat", run_id, {"phase": "training", "step": 5, "steps": 10})
    store.runs.report_epoch(
        run_id, 0, train_loss=1.0, val_acc=0.5, img_per_s=10.0, elapsed_s=1.0, worker_id="w-beat"
    )
    store.workers.heartbeat("w-beat", run_id, {"phase": "training", "step": 7, "steps": 10})
    assert version(store, study_id) == before


def test_a_claim_without_budget_leaves_it(store: Store) -> None:
    owner = new_person(store, "versions")
    study_id = new_study(store, owner, n_trials=1)
    running_trial(store, study_id)  # the only unit of budget, still running
    before = version(store, study_id)
    assert store.runs.claim_next("w-idle", [study_id]) is None
    assert version(store, study_id) == before


def test_a_reaped_run_bumps_it(store: Store) -> None:
    owner = new_person(store, "versions")
    study_id = new_study(store, owner, n_trials=2)
    run_id = running_trial(store, study_id)
    with store.db.session() as session:  # silent for a long time
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(heartbeat_at=datetime(2000, 1, 1, tzinfo=timezone.utc))
        )
    before = version(store, study_id)
    assert run_id in store.runs.reap_lost(60.0)
    assert version(store, study_id) > before


def test_bulk_insert_and_plain_sql_bump_it(store: Store) -> None:
    """Writers outside the store (a bulk load, a fix in psql) are counted too."""
    owner = new_person(store, "versions")
    study_id = new_study(store, owner, n_trials=500)
    before = version(store, study_id)
    rows = [
        {"study_id": study_id, "trial_number": i, "state": "complete", "family": "relu",
         "value": 0.5, "counts_budget": True, "attempt": 1, "epochs_done": 1}
        for i in range(300)
    ]  # fmt: skip
    with store.db.session() as session:
        session.execute(insert(Run).values(rows))  # one statement of 300 rows
    after_insert = version(store, study_id)
    assert after_insert > before
    if not store.db.sqlite:  # statement-level: one bump per statement, not per row
        assert after_insert == before + 1
    with store.db.session() as session:
        session.execute(
            text("UPDATE as_runs SET value = 0.6 WHERE study_id = :s AND trial_number = 3"),
            {"s": study_id},
        )
    assert version(store, study_id) > after_insert


def test_a_complete_training_bumps_its_study(store: Store) -> None:
    from service.store.trainings import NewTraining

    owner = new_person(store, "versions")
    study_id = new_study(store, owner, n_trials=2)
    run_id = running_trial(store, study_id)
    new = NewTraining(
        study_id=study_id, run_id=run_id, key="k" * 64, config_key="c" * 64, family="relu",
        seed=1, data_checksum="d" * 64, code_version="v",
    )  # fmt: skip
    claimed = store.trainings.claim(new, None)
    assert isinstance(claimed, int)
    before = version(store, study_id)
    store.trainings.finish(claimed, val_acc=0.8, test_acc=0.79)
    assert version(store, study_id) > before


@pytest.mark.postgres
def test_a_write_locks_the_study_row_only_at_its_commit(tmp_path: Path) -> None:
    """PostgreSQL: a transaction that changed a run leaves the study row free until it commits.

    (The counter used to be bumped right after the statement, so every worker of a study queued
    on its row from its first write to its commit.) Its commit bumps once, however many rows.
    """
    with migrated_database("postgres", tmp_path) as url:  # SQLite has no row locks: one writer
        store = Store.open(url)
        try:
            _commit_bumps_once(store)
        finally:
            store.dispose()


def _commit_bumps_once(store: Store) -> None:
    owner = new_person(store, "versions")
    study_id = new_study(store, owner, n_trials=3)
    run_id = running_trial(store, study_id)
    before = version(store, study_id)
    engine = store.db.engine
    with engine.connect() as writer, engine.connect() as other, writer.begin():
        for value in (0.1, 0.2, 0.3):
            writer.execute(update(Run).where(Run.id == run_id).values(value=value))
        with other.begin():
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            # The lock a claim or a bump takes (a repeated update of one run takes the foreign
            # key's KEY SHARE on the study, which blocks only FOR UPDATE and deletes).
            locked = other.execute(
                text("SELECT version FROM as_studies WHERE id = :s FOR NO KEY UPDATE"),
                {"s": study_id},
            ).scalar_one()
        assert locked == before  # not locked by the writer, and not bumped yet
    assert version(store, study_id) == before + 1


def test_the_study_list_reads_again_only_the_studies_that_changed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the list shows of a study (its counts, its best trial) is kept under the study's
    version: after one study of the page changes, only that one is counted again, and every
    study still shows what its rows say."""
    from service.store.queries import summaries

    owner = new_person(store, "listed")
    ids = [new_study(store, owner, name=f"listed-{k}") for k in range(3)]
    for study_id in ids:
        add_trial(store, study_id, value=0.5)
    counted: list[list[int]] = []
    original = summaries.counts_by_study
    monkeypatch.setattr(
        summaries,
        "counts_by_study",
        lambda session, study_ids: (
            counted.append(sorted(study_ids)) or original(session, study_ids)
        ),
    )

    def listed() -> dict[int, tuple[int, float | None]]:
        page = summaries.list_studies(store.db, owner=owner.name, limit=10)
        return {
            s.study.id: (s.study.counts.get("complete", 0), s.best.value if s.best else None)
            for s in page.items
        }

    assert listed() == {i: (1, 0.5) for i in ids}
    assert listed() == {i: (1, 0.5) for i in ids}
    add_trial(store, ids[1], value=0.9)  # one study changes
    assert listed() == {ids[0]: (1, 0.5), ids[1]: (2, 0.9), ids[2]: (1, 0.5)}
    assert counted == [sorted(ids), [ids[1]]]
