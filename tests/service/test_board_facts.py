"""The leaderboard facts a server process keeps (service.store.queries.board_facts) against the
SQL that reads a study in full, on PostgreSQL: after random histories of claims, attaches,
finishes, trainings, repeats of a key, reuses and late ledger rows; and with a writer that
commits after a reader read around it (the change ids, migration 0012).
"""

from __future__ import annotations

import importlib
import math
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update

from service.db import Run, Study, Training
from service.store import Store
from service.store.queries.evidence import study_trainings
from tests.service.conftest import migrated_database, new_person, spec

board = importlib.import_module("service.store.queries.board_facts")
leaderboard_module = importlib.import_module("service.store.queries.leaderboard")

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

FAMILIES = ("relu", "gelu", "smu")
STATES = ("complete", "complete", "complete", "pruned", "failed", "cancelled")


class History:
    """Rows of one study written as workers (and older code) write them, in random order."""

    def __init__(self, store: Store, study_id: int, seed: int) -> None:
        self.store, self.study_id = store, study_id
        self.rng = random.Random(seed)
        self.runs: list[int] = []
        self.running: list[int] = []
        self.trainings: list[tuple[int, str]] = []  # (id, key) of running trainings
        self.keys: list[str] = []

    def step(self) -> None:
        action = self.rng.choice(
            [self.claim, self.claim, self.finish, self.finish, self.train, self.end_training,
             self.repeat, self.reuse, self.change_result]
        )  # fmt: skip
        action()

    def _value(self) -> float:
        # Few distinct values: ties for the best trial and the median.
        return round(self.rng.uniform(0.6, 0.95), 2)

    def claim(self) -> None:
        family = self.rng.choice(FAMILIES)
        with self.store.db.session() as session:
            run_id = session.scalar(
                insert(Run)
                .values(study_id=self.study_id, state="running", family=family, attempt=1,
                        trial_number=len(self.runs), counts_budget=True)
                .returning(Run.id)
            )  # fmt: skip
        assert run_id is not None
        self.runs.append(run_id)
        self.running.append(run_id)

    def finish(self) -> None:
        if not self.running:
            return self.claim()
        run_id = self.running.pop(self.rng.randrange(len(self.running)))
        state = self.rng.choice(STATES)
        value = self._value() if state == "complete" else None
        test = None if value is None or self.rng.random() < 0.2 else value - 0.01
        with self.store.db.session() as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(state=state, value=value, test_acc=test,
                        value_std=0.01 if self.rng.random() < 0.2 else None)
            )  # fmt: skip

    def _training(self, key: str, state: str, run_id: int | None) -> int:
        family = self.rng.choice(FAMILIES)
        val = self._value() if state == "complete" else None
        with self.store.db.session() as session:
            found = session.scalar(
                insert(Training)
                .values(study_id=self.study_id, run_id=run_id, key=key, config_key="c",
                        family=family, seed=0, state=state, val_acc=val,
                        test_acc=None if val is None or self.rng.random() < 0.3 else val - 0.02,
                        data_checksum="d", code_version="t")
                .returning(Training.id)
            )  # fmt: skip
        assert found is not None
        return found

    def train(self) -> None:
        key = uuid.uuid4().hex
        run_id = self.rng.choice(self.runs) if self.runs else None
        self.trainings.append((self._training(key, "running", run_id), key))
        self.keys.append(key)

    def end_training(self) -> None:
        if not self.trainings:
            return self.train()
        training_id, _ = self.trainings.pop(self.rng.randrange(len(self.trainings)))
        state = self.rng.choice(("complete", "complete", "failed"))
        val = self._value() if state == "complete" else None
        with self.store.db.session() as session:
            session.execute(
                update(Training)
                .where(Training.id == training_id)
                .values(state=state, val_acc=val, test_acc=None if val is None else val - 0.02)
            )

    def repeat(self) -> None:
        """A key recorded again (complete at once, a later id: counts only if it is first)."""
        if self.keys:
            run_id = self.rng.choice(self.runs) if self.runs else None
            self._training(self.rng.choice(self.keys), "complete", run_id)

    def reuse(self) -> None:
        if self.runs:
            with self.store.db.session() as session:
                session.execute(
                    update(Run)
                    .where(Run.id == self.rng.choice(self.runs))
                    .values(reused_from_run=1)
                )

    def change_result(self) -> None:
        """A complete row's result changed (a hand-made fix): the facts follow it."""
        with self.store.db.session() as session:
            session.execute(
                text(
                    "UPDATE as_runs SET value = value + 0.001 WHERE id = (SELECT id FROM as_runs "
                    "WHERE study_id = :s AND state = 'complete' ORDER BY random() LIMIT 1)"
                ),
                {"s": self.study_id},
            )


def cover_every_run(store: Store, study_id: int) -> None:
    """A ledger row for every run without one (as the workers write them): no run stands alone."""
    with store.db.session() as session:
        session.execute(
            text(
                "INSERT INTO as_trainings (study_id, run_id, key, config_key, family, seed, state, "
                "data_checksum, code_version, created_at) SELECT study_id, id, md5(id::text), "
                "'c', coalesce(family, 'relu'), 0, 'failed', 'd', 't', now() FROM as_runs r "
                "WHERE study_id = :s AND NOT EXISTS "
                "(SELECT 1 FROM as_trainings t WHERE t.run_id = r.id)"
            ),
            {"s": study_id},
        )


def read_in_full(store: Store, study_id: int) -> Any:
    with store.db.reading() as session:
        answers = leaderboard_module._read_answers(session, study_id)
        trainings = study_trainings(session, study_id, seeds=1)
    return answers, trainings


def check_same(facts: Any, store: Store, study_id: int) -> None:
    with store.db.reading() as session:
        kept = facts.answers(session, study_id)
    assert kept is not None
    expected, trainings = read_in_full(store, study_id)
    assert kept.counts == expected.counts
    assert [s.family for s in kept.stats] == [s.family for s in expected.stats]
    for got, want in zip(kept.stats, expected.stats, strict=True):
        assert (got.runs, got.n, got.states, got.best) == (
            want.runs,
            want.n,
            want.states,
            want.best,
        )
        for name in ("mean", "std", "mean_test_acc"):
            assert close(getattr(got, name), getattr(want, name)), (got, want)
    assert kept.best_trials == expected.best_trials
    assert kept.medians == pytest.approx(expected.medians, rel=1e-15)
    if kept.trainings is None:
        return  # a run stands alone: the leaderboard reads the SQL's
    assert sorted(kept.trainings) == sorted(trainings)
    for family, got_t in kept.trainings.items():
        want_t = trainings[family]
        assert got_t.trainings == want_t.trainings
        for metric in ("val_acc", "test_acc"):
            a, b = getattr(got_t, metric), getattr(want_t, metric)
            assert a.n == b.n and close(a.mean, b.mean) and close(a.var, b.var, 1e-9), (a, b)


def close(a: float | None, b: float | None, rel: float = 1e-12) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def new_study(store: Store, name: str) -> int:
    owner = new_person(store, name)
    study, _ = store.studies.create(owner.info, spec(name=name, n_trials=1000))
    return study.id


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kept_facts_agree_with_a_full_read_after_random_histories(
    pg_store: Store, seed: int
) -> None:
    study_id = new_study(pg_store, f"facts-{seed}")
    history, facts = History(pg_store, study_id, seed), board.BoardFacts()
    for round_ in range(12):
        for _ in range(25):
            history.step()
        if round_ % 4 == 3:
            cover_every_run(pg_store, study_id)  # the ledger's answer, not only the SQL's
        check_same(facts, pg_store, study_id)
    cover_every_run(pg_store, study_id)
    with pg_store.db.reading() as session:
        final = facts.answers(session, study_id)
    assert final is not None and final.trainings is not None
    assert sum(t.trainings for t in final.trainings.values()) > 0
    check_same(board.BoardFacts(), pg_store, study_id)  # a first read agrees too


def test_a_run_no_ledger_row_speaks_for_leaves_the_trainings_to_the_sql(pg_store: Store) -> None:
    study_id = new_study(pg_store, "facts-alone")
    history, facts = History(pg_store, study_id, 7), board.BoardFacts()
    history.claim()
    run_id = history.running.pop()
    with pg_store.db.session() as session:
        session.execute(update(Run).where(Run.id == run_id).values(state="complete", value=0.8))
    with pg_store.db.reading() as session:
        assert facts.answers(session, study_id).trainings is None
    cover_every_run(pg_store, study_id)
    with pg_store.db.reading() as session:
        assert facts.answers(session, study_id).trainings == {}  # covered: a failed training


def test_a_writer_that_commits_after_a_later_one_is_not_missed(pg_store: Store) -> None:
    """A row written by a transaction still open while the facts were read (and a younger one
    committed) is read after it commits: the change ids start at the oldest running one."""
    study_id = new_study(pg_store, "facts-order")
    facts = board.BoardFacts()
    cover_every_run(pg_store, study_id)
    with pg_store.db.reading() as session:
        assert facts.answers(session, study_id).stats == []
    slow = pg_store.db.engine.connect()
    slow_tx = slow.begin()
    slow.execute(
        insert(Run).values(study_id=study_id, state="complete", family="relu", value=0.7,
                           attempt=1, counts_budget=True, trial_number=0)
    )  # fmt: skip
    History(pg_store, study_id, 3).claim()  # a younger writer commits first
    with pg_store.db.reading() as session:
        seen = facts.answers(session, study_id)
    assert [s.states["running"] for s in seen.stats] == [1]
    slow_tx.commit()
    slow.close()
    with pg_store.db.reading() as session:
        seen = facts.answers(session, study_id)
    relu = next(s for s in seen.stats if s.family == "relu")
    assert relu.n == 1 and relu.best == 0.7
    check_same(facts, pg_store, study_id)


def walked(store: Store, name: str, seed: int, steps: int) -> int:
    """A new study after `steps` random steps, every run with a ledger row."""
    study_id = new_study(store, name)
    history = History(store, study_id, seed)
    for _ in range(steps):
        history.step()
    cover_every_run(store, study_id)
    return study_id


def test_the_leaderboard_reads_the_kept_facts_and_follows_changes(pg_store: Store) -> None:
    study_id = walked(pg_store, "facts-board", 11, 60)
    first = leaderboard_module.leaderboard(pg_store.db, study_id)
    assert board.board_facts(pg_store.db.caches)._studies[study_id].since is not None
    with pg_store.db.session() as session:
        session.execute(
            insert(Run).values(study_id=study_id, state="complete", family="gelu", value=0.999,
                               attempt=1, counts_budget=True, trial_number=999)
        )  # fmt: skip
    cover_every_run(pg_store, study_id)
    after = leaderboard_module.leaderboard(pg_store.db, study_id)
    assert after.leader is not None and after.leader.family == "gelu"
    assert after.leader.best == 0.999 and after.leader.best_number == 999
    assert sum(r.n for r in after.rows) == sum(r.n for r in first.rows) + 1
    with pg_store.db.session() as session:
        assert session.scalar(select(Study.id).where(Study.id == study_id)) == study_id


def test_rows_written_before_the_change_ids_are_read_once_in_full(pg_store: Store) -> None:
    """Rows of an upgraded database carry no change id: the first read takes every row."""
    study_id = walked(pg_store, "facts-old", 5, 40)
    with pg_store.db.session() as session:
        for table in ("as_runs", "as_trainings"):
            session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_stamp_update"))
            session.execute(
                text(f"UPDATE {table} SET changed_xid = NULL WHERE study_id = :s"), {"s": study_id}
            )
            session.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {table}_stamp_update"))
    check_same(board.BoardFacts(), pg_store, study_id)


def test_migration_0012_stamps_inserts_and_watched_changes_only(pg_store: Store) -> None:
    study_id = new_study(pg_store, "facts-stamps")
    History(pg_store, study_id, 2).claim()
    with pg_store.db.session() as session:
        (run_id, stamped) = session.execute(
            select(Run.id, Run.changed_xid).where(Run.study_id == study_id)
        ).one()
        assert stamped is not None
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=text("now()")))
    with pg_store.db.session() as session:
        assert session.scalar(select(Run.changed_xid).where(Run.id == run_id)) == stamped
        session.execute(update(Run).where(Run.id == run_id).values(state="pruned"))
    with pg_store.db.session() as session:
        assert session.scalar(select(Run.changed_xid).where(Run.id == run_id)) > stamped


def test_the_sqlite_leaderboard_reads_in_full(tmp_path: Path) -> None:
    with migrated_database("sqlite", tmp_path) as url:
        store = Store.open(url)
        study_id = new_study(store, "facts-sqlite")
        leaderboard_module.leaderboard(store.db, study_id)
        assert "board_facts" not in store.db.caches
        store.dispose()


def test_a_deleted_row_is_noticed_by_the_periodic_count(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id, facts = walked(pg_store, "facts-deleted", 13, 30), board.BoardFacts()
    check_same(facts, pg_store, study_id)
    with pg_store.db.session() as session:
        session.execute(
            text(
                "DELETE FROM as_runs WHERE id = (SELECT max(id) FROM as_runs WHERE study_id = :s)"
            ),
            {"s": study_id},
        )
    monkeypatch.setattr(board, "CHECK_S", 0.0)
    check_same(facts, pg_store, study_id)


def test_a_process_keeps_the_most_recent_studies_up_to_its_row_budget(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    facts, studies = board.BoardFacts(), []
    for k in range(3):
        study_id = new_study(pg_store, f"facts-kept-{k}")
        for _ in range(5):
            History(pg_store, study_id, k).claim()
        studies.append(study_id)
    monkeypatch.setattr(board, "KEPT_ROWS", 10)  # two studies of 5 runs
    for study_id in studies:
        with pg_store.db.reading() as session:
            facts.answers(session, study_id)
    assert list(facts._studies) == studies[1:]
    with pg_store.db.reading() as session:  # the forgotten one is read again when asked
        assert [s.states["running"] for s in facts.answers(session, studies[0]).stats] != []
    assert list(facts._studies) == [studies[2], studies[0]]
