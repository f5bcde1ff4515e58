"""The leaderboard read model: a study's activation families ranked, each against the baseline.

The one ranking and the one set of statistics behind the API's leaderboard, the dashboard's
summary and every export (service.store.exports shapes them). Each family also carries the
evidence of its trainings (service.store.queries.evidence): `search`, this study's own trainings
on validation accuracy (a verdict of "promising" at most), and `confirmation`, fresh seeds of a
confirm study on test accuracy ("better" / "worse" / "no evidence"), when there are any.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session

from service.db import Run, Study
from service.evidence import ALPHA
from service.store.base import Database, NotFound
from service.store.queries.board_facts import BoardAnswers, board_facts
from service.store.queries.evidence import (
    Comparison,
    FamilyTrainings,
    Links,
    StudyTrainings,
    compare,
    confirm_links,
    confirmation,
    study_trainings,
)
from service.store.queries.summaries import SCORED, FamilyStats, study_aggregates

DEFAULT_BASELINE = "relu"
RANKED_BY = "best"
RANKING = (
    "Families are ranked by best: the highest validation accuracy among their complete trials "
    "(the tuned configuration a search is after; mean and median also reflect how wide a "
    "family's search ranges are). Ties go to the higher mean, then the name; families without "
    "a complete trial come last. n, mean ± std, median, test accuracy and the differences to "
    "the baseline family are columns (statistics of trials)."
)
EVIDENCE = (
    "Evidence counts trainings (a configuration and a seed; identical repeats once). `search`: "
    "this study's trainings on validation accuracy: mean with its 95 % t interval, Δ against "
    "the baseline family with its 95 % Welch interval, Welch's two-sided p-value after Holm's "
    "correction across the families; the best of many is optimistic, so a significant gain here "
    "is 'promising' at most. `confirmation`: the fresh seeds of a confirm study, on test "
    "accuracy: 'better', 'worse' or 'no evidence' at alpha 0.05. Fewer than 2 trainings on "
    "either side: 'too few runs'. `verdict` is the confirmation's when there is one."
)


@dataclass(frozen=True)
class LeaderRow:
    """One family of a study against the baseline family (statistics of complete trials)."""

    family: str
    rank: int  # 1 = first, in the order of rank_key
    n: int  # complete trials with a value
    best: float | None
    best_number: int | None  # the best trial
    best_std: float | None  # its standard deviation over seeds (seeds > 1)
    best_test_acc: float | None  # its test accuracy
    mean: float | None
    std: float | None  # sample standard deviation over the family's complete trials
    median: float | None
    mean_test_acc: float | None
    delta_vs_baseline: float | None  # mean minus the baseline family's mean
    delta_best_vs_baseline: float | None  # best minus the baseline family's best
    is_baseline: bool
    states: dict[str, int]  # attempts by state
    trainings: int  # distinct complete trainings (trials × seeds, identical repeats once)
    search: Comparison  # this study's trainings, validation accuracy
    confirmation: Comparison | None  # a confirm study's fresh seeds, test accuracy
    verdict: str  # the confirmation's, else the search's

    @property
    def evidence(self) -> Comparison:
        """The comparison the verdict comes from."""
        return self.confirmation or self.search


@dataclass(frozen=True)
class LeaderboardView:
    """A study's families in rank order, with the baseline they are compared against."""

    study_id: int
    baseline: str
    ranked_by: str
    rows: list[LeaderRow]  # every family with an attempt, in rank order
    confirms: int | None = None  # the study this one confirms
    confirmed_by: list[int] = field(default_factory=list)  # its confirm studies, oldest first
    confirmation_study_id: int | None = None  # whose trainings the confirmations are
    alpha: float = ALPHA

    @property
    def scored(self) -> list[LeaderRow]:
        """Families with a complete trial, in rank order: the rows the leaderboard lists."""
        return [row for row in self.rows if row.n]

    @property
    def leader(self) -> LeaderRow | None:
        """The family of the best trial overall (None until a trial completes)."""
        return next((row for row in self.rows if row.best is not None), None)

    @property
    def baseline_row(self) -> LeaderRow | None:
        """The baseline family's row, if it has an attempt."""
        return next((row for row in self.rows if row.is_baseline), None)


def baseline_family(spec: dict[str, Any]) -> str:
    """The family trials are compared against: the spec's first baseline, else relu."""
    baselines = spec.get("baselines") or []
    if isinstance(baselines, list) and baselines:
        first = baselines[0]
        if isinstance(first, str):
            return first
        if isinstance(first, dict) and isinstance(first.get("family"), str):
            return str(first["family"])
    return DEFAULT_BASELINE


def study_baseline(session: Session, spec: dict[str, Any], confirms: int | None) -> str:
    """A study's baseline family; a confirm study's is its source's (its own spec may list no
    baseline: the source's best baseline configuration is one of its enqueued trials)."""
    if confirms is not None and not spec.get("baselines"):
        source = session.scalar(select(Study.spec).where(Study.id == confirms))
        if source is not None:
            return baseline_family(dict(source))
    return baseline_family(spec)


def rank_key(stats: FamilyStats) -> tuple[bool, float, float, str]:
    """The one order of families, for the API, the dashboard and every export (see RANKING)."""
    best = stats.best if stats.best is not None and math.isfinite(stats.best) else None
    mean = stats.mean if stats.mean is not None and math.isfinite(stats.mean) else None
    return (
        best is None,
        -(best if best is not None else 0.0),
        -(mean if mean is not None else -math.inf),
        stats.family,
    )


def leaderboard(db: Database, study_id: int) -> LeaderboardView:
    """Every family with a trial, ranked by rank_key, each against the baseline family.

    On PostgreSQL the trials' statistics and the trainings come from the facts this process
    keeps of the study (service.store.queries.board_facts: the rows changed since its last read);
    otherwise three statements for the trial statistics (the grouped aggregates from the covering
    index, one probe per family for its best trial and one for its median), then the study's
    trainings and, if it has one, its confirm study's.
    """
    with db.reading() as session:
        study = session.execute(
            select(Study.spec, Study.confirms_study_id, Study.stage).where(Study.id == study_id)
        ).first()
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        spec, confirms = dict(study.spec), study.confirms_study_id
        facts = None if db.sqlite else board_facts(db.caches)
        answers = facts.answers(session, study_id) if facts else None
        if answers is None:
            answers = _read_answers(session, study_id)
        stats = sorted(answers.stats, key=rank_key)
        baseline = study_baseline(session, spec, confirms)

        def trainings(of: int, seeds: int = 2) -> StudyTrainings:
            found = facts.trainings(session, of) if facts else None
            return study_trainings(session, of, seeds=seeds) if found is None else found

        own = answers.trainings
        if own is None:
            own = study_trainings(session, study_id, seeds=int(spec.get("seeds") or 1))
        links = confirm_links(session, study_id, confirms)
        # A campaign's later stage trains promoted configurations with fresh seeds: its own
        # trainings confirm, as a confirm study's do (docs/campaigns.md).
        later_stage = bool(study.stage)
        confirmed = (
            (study_id, own) if later_stage else confirmation(trainings, study_id, links, own)
        )
        best_trials, medians = answers.best_trials, answers.medians
    search = compare(own, baseline, study_id, "search")
    confirm = compare(confirmed[1], baseline, confirmed[0], "confirm") if confirmed else {}
    base = next((s for s in stats if s.family == baseline), None)
    rows = []
    for rank, s in enumerate(stats, start=1):
        number, best_std, best_test = best_trials.get(s.family, (None, None, None))
        searched = search.get(s.family) or _no_trainings(s.family, baseline, study_id)
        confirmation_row = confirm.get(s.family)
        rows.append(
            LeaderRow(
                family=s.family,
                rank=rank,
                n=s.n,
                best=s.best,
                best_number=number,
                best_std=best_std,
                best_test_acc=best_test,
                mean=s.mean,
                std=s.std,
                median=medians.get(s.family),
                mean_test_acc=s.mean_test_acc,
                delta_vs_baseline=_delta(s.mean, base.mean if base else None),
                delta_best_vs_baseline=_delta(s.best, base.best if base else None),
                is_baseline=s.family == baseline,
                states=dict(s.states),
                trainings=searched.trainings,
                search=searched,
                confirmation=confirmation_row,
                verdict=(confirmation_row or searched).verdict,
            )
        )
    return _view(study_id, baseline, rows, links, confirmed[0] if confirmed else None)


def _view(
    study_id: int, baseline: str, rows: list[LeaderRow], links: Links, confirmation_id: int | None
) -> LeaderboardView:
    return LeaderboardView(
        study_id=study_id,
        baseline=baseline,
        ranked_by=RANKED_BY,
        rows=rows,
        confirms=links.confirms,
        confirmed_by=links.confirmed_by,
        confirmation_study_id=confirmation_id,
    )


def _read_answers(session: Session, study_id: int) -> BoardAnswers:
    """What the leaderboard reads of the study's trials, read in full (SQLite, or a study whose
    facts a process does not keep: service.store.queries.board_facts); trainings left to
    study_trainings."""
    aggregates = study_aggregates(session, study_id)
    stats = aggregates.families
    scored = {s.family: s.n for s in stats if s.n}
    best_trials = _best_trials(session, study_id, list(scored))
    medians = _medians(session, study_id, scored)
    return BoardAnswers(aggregates.counts, stats, best_trials, medians, None)


def _no_trainings(family: str, baseline: str, study_id: int) -> Comparison:
    """The search comparison of a family with no complete training yet."""
    nothing = {family: FamilyTrainings(0)}
    return compare(nothing, baseline if family == baseline else "", study_id, "search")[family]


def _delta(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def _best_trials(
    session: Session, study_id: int, families: Sequence[str]
) -> dict[str, tuple[int | None, float | None, float | None]]:
    """(number, value_std, test_acc) of each family's best trial: one statement, an index probe
    per family."""
    if not families:
        return {}
    probes = [
        select(Run.family, Run.trial_number, Run.value_std, Run.test_acc)
        .where(Run.study_id == study_id, Run.family == family, SCORED)
        .order_by(Run.value.desc(), Run.id)
        .limit(1)
        .subquery()
        for family in families
    ]
    statement = union_all(
        *(select(p.c.family, p.c.trial_number, p.c.value_std, p.c.test_acc) for p in probes)
    )
    return {family: (number, std, test) for family, number, std, test in session.execute(statement)}


def _medians(session: Session, study_id: int, counts: dict[str, int]) -> dict[str, float]:
    """Each family's median value: the one or two middle values, read in index order.

    Ordered by value alone: ties do not change the middle value, and an order the covering index
    (ix_as_runs_study_summary) gives needs no sort (with the id as tie-break, PostgreSQL sorted
    each family's values: 14 ms against 2 ms a family at 100,000 trials)."""
    if not counts:
        return {}
    probes = [
        select(Run.family, Run.value)
        .where(Run.study_id == study_id, Run.family == family, SCORED)
        .order_by(Run.value)
        .offset((n - 1) // 2)
        .limit(1 if n % 2 else 2)
        .subquery()
        for family, n in counts.items()
    ]
    middle: dict[str, list[float]] = {}
    for family, value in session.execute(
        union_all(*(select(p.c.family, p.c.value) for p in probes))
    ):
        middle.setdefault(family, []).append(float(value))
    return {family: sum(values) / len(values) for family, values in middle.items()}
