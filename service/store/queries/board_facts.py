"""A study's leaderboard facts, kept in memory by each server process and brought up to date
from the rows changed since the last read (PostgreSQL; migration 0012).

The leaderboard (service.store.queries.leaderboard) reads per family: attempts by state, the
complete trials' count, sums, best and median, and the distinct complete trainings of the
ledger. Read in full, that is every run and training of the study on each change: ~120 ms of
SQL at 100,000 trials on the 2-core VM. Here a process reads a study's rows once, then before
each use only the rows whose `changed_xid` (the transaction that last changed a column read
here, set by a trigger) is at least the oldest transaction that was still running when it last
read: whatever order writers commit in, nothing is missed, and an unchanged study costs one
index probe per table. The aggregates are kept as the facts change (compensated sums, sorted
values per family), so an answer costs the families, not the trials.

Same numbers as the SQL reads (tests/service/test_board_facts.py compares them after random
histories) with two limits, where the leaderboard reads in full instead: a study with complete
runs that no ledger row speaks for (stored before the ledger; `covered` is False), and SQLite.
Rows are never deleted alone (a study's go with it) nor moved to another study; still, every
CHECK_S a process counts the study's rows (an index-only count) and reads it in full again if
they are fewer than it holds, so that a hand-made deletion does not live on in it.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left, insort
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.db import Run, RunState, Training, TrainingState
from service.evidence import Summary
from service.store.queries.evidence import SHIFT, FamilyTrainings, StudyTrainings, moments_summary
from service.store.queries.summaries import FamilyStats, sample_std

CHECK_S = 60.0  # how often the rows are counted (see the module's docstring)
# Per process, the most recently used studies up to this many rows (runs and trainings; about
# 300 bytes a row: a 100,000-trial study holds ~60 MB).
KEPT_ROWS = 600_000

RUN_COLUMNS = (
    Run.id, Run.family, Run.state, Run.value, Run.test_acc, Run.counts_budget, Run.value_std,
    Run.reused_from_run, Run.trial_number,
)  # fmt: skip
TRAINING_COLUMNS = (
    Training.id, Training.key, Training.family, Training.state, Training.val_acc,
    Training.test_acc, Training.run_id,
)  # fmt: skip
OLDEST_RUNNING = text("SELECT txid_snapshot_xmin(txid_current_snapshot())")


class Sum:
    """A float sum that values can also leave (Neumaier's compensation: the error stays a few
    ulps however many values came and went)."""

    __slots__ = ("compensation", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.compensation = 0.0

    def add(self, value: float) -> None:
        total = self.total + value
        if abs(self.total) >= abs(value):
            self.compensation += (self.total - total) + value
        else:
            self.compensation += (value - total) + self.total
        self.total = total

    @property
    def value(self) -> float:
        return self.total + self.compensation


@dataclass
class Moments:
    """Count, sum and sum of squares of some values (`shift` subtracted from each first)."""

    shift: float = 0.0
    n: int = 0
    total: Sum = field(default_factory=Sum)
    squares: Sum = field(default_factory=Sum)

    def load(self, values: list[float]) -> None:
        """Start from these values (exactly rounded sums)."""
        shifted = [value - self.shift for value in values]
        self.n = len(shifted)
        self.total.total = math.fsum(shifted)
        self.squares.total = math.fsum(v * v for v in shifted)

    def add(self, value: float, sign: int) -> None:
        shifted = value - self.shift
        self.n += sign
        self.total.add(sign * shifted)
        self.squares.add(sign * shifted * shifted)


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


class RunFact(NamedTuple):
    """What the leaderboard reads of a run."""

    family: str | None
    state: str
    value: float | None
    test_acc: float | None
    budget: bool
    value_std: float | None
    reused: bool
    number: int | None

    @property
    def scored(self) -> bool:
        return self.state == RunState.COMPLETE and self.value is not None

    @property
    def may_stand_alone(self) -> bool:
        """A run that stands for its own trainings unless a ledger row speaks for it."""
        return self.scored and self.family is not None and not self.reused


class TrainingFact(NamedTuple):
    """What the leaderboard reads of a training."""

    key: str
    family: str
    state: str
    val: float | None
    test: float | None
    run_id: int | None


@dataclass
class FamilyRuns:
    """One family's attempts by state and its complete trials' values."""

    states: Counter[str] = field(default_factory=Counter)
    moments: Moments = field(default_factory=Moments)  # complete trials with a value
    n_test: int = 0  # complete trials with a test accuracy
    test_total: Sum = field(default_factory=Sum)
    ranked: list[tuple[float, int]] = field(default_factory=list)  # (value, -id), ascending

    def change(self, run_id: int, fact: RunFact, sign: int) -> None:
        self.states[fact.state] += sign
        if fact.state != RunState.COMPLETE:
            return
        if fact.value is not None:
            self.moments.add(fact.value, sign)
            entry = (fact.value, -run_id)
            if sign > 0:
                insort(self.ranked, entry)
            else:
                del self.ranked[bisect_left(self.ranked, entry)]
        if fact.test_acc is not None:
            self.n_test += sign
            self.test_total.add(sign * fact.test_acc)

    def collect(self, run_id: int, fact: RunFact) -> None:
        """One run of a first read (settle() sums them)."""
        self.states[fact.state] += 1
        if fact.state == RunState.COMPLETE:
            if fact.value is not None:
                self.ranked.append((fact.value, -run_id))
            if fact.test_acc is not None:
                self.n_test += 1
                self.test_total.add(fact.test_acc)

    def settle(self) -> None:
        self.ranked.sort()
        self.moments.load([value for value, _ in self.ranked])

    @property
    def runs(self) -> int:
        return sum(self.states.values())


@dataclass
class FamilyLedger:
    """The moments of one family's counted trainings (shifted by ½, as the SQL sums are)."""

    trainings: int = 0
    val: Moments = field(default_factory=lambda: Moments(SHIFT))
    test: Moments = field(default_factory=lambda: Moments(SHIFT))

    _vals: list[float] = field(default_factory=list)  # of a first read, until settle()
    _tests: list[float] = field(default_factory=list)

    def change(self, fact: TrainingFact, sign: int) -> None:
        self.trainings += sign
        if fact.val is not None:
            self.val.add(fact.val, sign)
        if fact.test is not None:
            self.test.add(fact.test, sign)

    def collect(self, fact: TrainingFact) -> None:
        """One counted training of a first read (settle() sums them)."""
        self.trainings += 1
        if fact.val is not None:
            self._vals.append(fact.val)
        if fact.test is not None:
            self._tests.append(fact.test)

    def settle(self) -> None:
        self.val.load(self._vals)
        self.test.load(self._tests)
        self._vals, self._tests = [], []


class StudyFacts:
    """One study's runs and trainings as last read, and the aggregates kept from them."""

    def __init__(self, study_id: int) -> None:
        self.study_id = study_id
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.since: int | None = None  # the oldest transaction running at the last read
        self.checked_at = time.monotonic()
        self.odd = False  # a value that is not a finite number: the SQL reads what it means
        self.runs: dict[int, RunFact] = {}
        self.trainings: dict[int, TrainingFact] = {}
        self.families: dict[str, FamilyRuns] = {}
        self.ledger: dict[str, FamilyLedger] = {}
        self.by_key: dict[str, list[int]] = {}  # complete trainings' ids per key, ascending
        self.ledger_rows: Counter[int] = Counter()  # trainings per run id, any state
        self.uncovered = 0  # runs that stand alone and that no ledger row speaks for
        self.budget: Counter[str] = Counter()  # runs using the study's budget, by state

    # -- reading -------------------------------------------------------------------------------
    def refresh(self, session: Session) -> None:
        """Bring the facts up to date: every row on the first read, then the changed ones."""
        self._read(session)
        if time.monotonic() - self.checked_at > CHECK_S and not self._whole(session):
            self._reset()
            self._read(session)

    def _read(self, session: Session) -> None:
        # Before the reads: a transaction these reads cannot see has an id at least this.
        oldest = int(session.scalar(OLDEST_RUNNING) or 0)
        runs = select(*RUN_COLUMNS).where(Run.study_id == self.study_id)
        trainings = select(*TRAINING_COLUMNS).where(Training.study_id == self.study_id)
        if self.since is not None:
            runs = runs.where(Run.changed_xid >= self.since)
            trainings = trainings.where(Training.changed_xid >= self.since)
        if self.since is None:
            self._load(_fetch(session, runs), _fetch(session, trainings))
        else:
            self._apply_runs(_fetch(session, runs))
            self._apply_trainings(_fetch(session, trainings))
        self.since = oldest

    def _whole(self, session: Session) -> bool:
        """Whether the database has as many rows of the study as the facts (a deletion, or a
        row that went to another study, makes them differ; so may a row written meanwhile)."""
        self.checked_at = time.monotonic()
        runs = session.scalar(select(func.count()).where(Run.study_id == self.study_id))
        trainings = session.scalar(select(func.count()).where(Training.study_id == self.study_id))
        return (runs, trainings) == (len(self.runs), len(self.trainings))

    def _load(self, runs: Iterable[Any], trainings: Iterable[Any]) -> None:
        """Every row of the study at once: the facts first, then each aggregate in one pass
        (one change at a time took 2.5 s at 100,000 trials; this, a fifth of it)."""
        self._apply_runs(runs, count=False)
        self._apply_trainings(trainings, count=False)
        for run_id, fact in self.runs.items():
            if fact.budget:
                self.budget[fact.state] += 1
            if fact.family is not None:
                self._family(fact.family).collect(run_id, fact)
            if fact.may_stand_alone and not self.ledger_rows[run_id]:
                self.uncovered += 1
        for family in self.families.values():
            family.settle()
        for ids in self.by_key.values():
            ids.sort()
            first = self.trainings[ids[0]]
            self._ledger_of(first.family).collect(first)
        for ledger in self.ledger.values():
            ledger.settle()

    def _apply_runs(self, rows: Iterable[Any], *, count: bool = True) -> None:
        """The rows' facts, and (`count`) their changes to the aggregates."""
        for run_id, family, state, value, test_acc, budget, value_std, reused, number in rows:
            if not (_finite(value) and _finite(test_acc) and _finite(value_std)):
                self.odd = True
            fact = RunFact(
                family, str(state), value, test_acc, bool(budget), value_std, reused is not None,
                number,
            )  # fmt: skip
            if count:
                self._set_run(run_id, fact)
            else:
                self.runs[run_id] = fact

    def _apply_trainings(self, rows: Iterable[Any], *, count: bool = True) -> None:
        for training_id, key, family, state, val, test, run_id in rows:
            if not (_finite(val) and _finite(test)):
                self.odd = True
            fact = TrainingFact(key, family, str(state), val, test, run_id)
            if count:
                self._set_training(training_id, fact)
                continue
            self.trainings[training_id] = fact
            if run_id is not None:
                self.ledger_rows[run_id] += 1
            if fact.state == TrainingState.COMPLETE:
                self.by_key.setdefault(key, []).append(training_id)

    # -- keeping the aggregates ------------------------------------------------------------------
    def _set_run(self, run_id: int, fact: RunFact) -> None:
        old = self.runs.get(run_id)
        if old == fact:
            return
        if old is not None:
            self._count_run(run_id, old, -1)
        self.runs[run_id] = fact
        self._count_run(run_id, fact, +1)

    def _count_run(self, run_id: int, fact: RunFact, sign: int) -> None:
        if fact.budget:
            self.budget[fact.state] += sign
        if fact.family is not None:
            family = self._family(fact.family)
            family.change(run_id, fact, sign)
            if not family.runs:
                del self.families[fact.family]
        if fact.may_stand_alone and not self.ledger_rows[run_id]:
            self.uncovered += sign

    def _set_training(self, training_id: int, fact: TrainingFact) -> None:
        old = self.trainings.get(training_id)
        if old == fact:
            return
        self.trainings[training_id] = fact
        if old is not None:
            self._ledger_row(old.run_id, -1)
        self._ledger_row(fact.run_id, +1)
        for key in {f.key for f in (old, fact) if f is not None}:
            self._recount_key(key, training_id, old, fact)

    def _ledger_row(self, run_id: int | None, sign: int) -> None:
        if run_id is None:
            return
        before = self.ledger_rows[run_id]
        self.ledger_rows[run_id] = before + sign
        run = self.runs.get(run_id)
        if run is not None and run.may_stand_alone and (before == 0) != (before + sign == 0):
            self.uncovered -= sign  # its first ledger row covers it; its last one uncovers it

    def _recount_key(
        self, key: str, training_id: int, old: TrainingFact | None, new: TrainingFact
    ) -> None:
        """The key's first complete row counts (the SQL's rule): move the count if it moved."""
        ids = self.by_key.setdefault(key, [])
        first_before = ids[0] if ids else None
        counted_before = old if first_before == training_id else self._fact(first_before)
        if old is not None and old.key == key and old.state == TrainingState.COMPLETE:
            del ids[bisect_left(ids, training_id)]
        if new.key == key and new.state == TrainingState.COMPLETE:
            insort(ids, training_id)
        counted_after = self._fact(ids[0] if ids else None)
        if not ids:
            del self.by_key[key]
        if counted_before is not counted_after:
            for counted, sign in ((counted_before, -1), (counted_after, +1)):
                if counted is not None:
                    self._ledger_of(counted.family).change(counted, sign)

    def _family(self, name: str) -> FamilyRuns:
        found = self.families.get(name)
        if found is None:
            found = self.families[name] = FamilyRuns()
        return found

    def _ledger_of(self, family: str) -> FamilyLedger:
        found = self.ledger.get(family)
        if found is None:
            found = self.ledger[family] = FamilyLedger()
        return found

    def _fact(self, training_id: int | None) -> TrainingFact | None:
        return None if training_id is None else self.trainings[training_id]

    @property
    def rows(self) -> int:
        """Runs and trainings held."""
        return len(self.runs) + len(self.trainings)

    # -- answers -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """As service.store.queries.summaries.study_aggregates' counts."""
        return {state.value: self.budget[state.value] for state in RunState}

    def family_stats(self) -> list[FamilyStats]:
        """As service.store.queries.summaries.family_stats."""
        found = []
        for name in sorted(self.families):
            family = self.families[name]
            m = family.moments
            total, squares = m.total.value, m.squares.value
            found.append(
                FamilyStats(
                    family=name,
                    runs=family.runs,
                    n=m.n,
                    best=family.ranked[-1][0] if family.ranked else None,
                    mean=total / m.n if m.n else None,
                    std=sample_std(m.n, total, squares),
                    mean_test_acc=(
                        family.test_total.value / family.n_test if m.n and family.n_test else None
                    ),
                    states={state.value: family.states[state.value] for state in RunState},
                )
            )
        return found

    def best_trials(self) -> dict[str, tuple[int | None, float | None, float | None]]:
        """(number, value_std, test_acc) of each family's best trial (highest value, then the
        lowest id), as the leaderboard's probes read them."""
        best = {}
        for name, family in self.families.items():
            if family.ranked:
                fact = self.runs[-family.ranked[-1][1]]
                best[name] = (fact.number, fact.value_std, fact.test_acc)
        return best

    def medians(self) -> dict[str, float]:
        """Each family's median value."""
        found = {}
        for name, family in self.families.items():
            n = len(family.ranked)
            if n:
                middle = family.ranked[(n - 1) // 2 : n // 2 + 1]
                found[name] = sum(value for value, _ in middle) / len(middle)
        return found

    def trainings_of(self) -> StudyTrainings | None:
        """The ledger's distinct complete trainings per family; None when a run stands alone
        (the SQL reads what such runs stand for)."""
        if self.uncovered:
            return None
        return {
            family: FamilyTrainings(ledger.trainings, _summary(ledger.val), _summary(ledger.test))
            for family, ledger in sorted(self.ledger.items())
            if ledger.trainings
        }


def _fetch(session: Session, statement: Any) -> list[tuple[Any, ...]]:
    """The statement's rows as the driver gives them: SQLAlchemy's result rows cost more than
    the query itself at 100,000 rows (0.45 s against 0.15 s; the columns need no conversion)."""
    compiled = statement.compile(dialect=session.get_bind().dialect)
    cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), compiled.params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _summary(moments: Moments) -> Summary:
    return moments_summary(moments.n, moments.total.value, moments.squares.value)


@dataclass(frozen=True)
class BoardAnswers:
    """What the leaderboard reads of a study's trials and trainings, at one moment."""

    counts: dict[str, int]  # runs using the budget by state (study_aggregates' counts)
    stats: list[FamilyStats]
    best_trials: dict[str, tuple[int | None, float | None, float | None]]
    medians: dict[str, float]
    trainings: StudyTrainings | None  # None: the SQL must read them (StudyFacts.trainings_of)


class BoardFacts:
    """The facts of the studies this process showed last, each read under its own lock."""

    def __init__(self) -> None:
        self._studies: OrderedDict[int, StudyFacts] = OrderedDict()
        self._lock = threading.Lock()

    def answers(self, session: Session, study_id: int) -> BoardAnswers | None:
        """The study's answers, from its facts brought up to date (None: read them in SQL)."""
        with self._lock:
            facts = self._studies.pop(study_id, None) or StudyFacts(study_id)
            self._studies[study_id] = facts
        with facts.lock:
            facts.refresh(session)
            found = None if facts.odd else BoardAnswers(
                facts.counts(), facts.family_stats(), facts.best_trials(), facts.medians(),
                facts.trainings_of(),
            )  # fmt: skip
        self._evict()
        return found

    def _evict(self) -> None:
        """Forget the least recently used studies beyond KEPT_ROWS (never the last one)."""
        with self._lock:
            held = sum(f.rows for f in self._studies.values())
            while held > KEPT_ROWS and len(self._studies) > 1:
                _, oldest = self._studies.popitem(last=False)
                held -= oldest.rows

    def trainings(self, session: Session, study_id: int) -> StudyTrainings | None:
        """Another study's trainings (a confirm study's), as answers() reads them."""
        found = self.answers(session, study_id)
        return None if found is None else found.trainings


def board_facts(caches: dict[str, Any]) -> BoardFacts:
    """The process's facts, in a database's caches (made on first use)."""
    found: BoardFacts = caches.setdefault("board_facts", BoardFacts())
    return found
