"""A study's trainings per family and their comparisons with the baseline (service.evidence).

The unit is the training (EVIDENCE.md): one configuration and one seed. Identical repeats count
once. Where the samples come from:

- the trainings ledger (as_trainings, migration 0005): a study's complete trainings, one per
  distinct `key` (the key is exact: canonical config, seed, data and code version);
- runs the ledger never saw (stored before it existed): each complete run stands for its own
  trainings, one per seed of `record["seeds"]` when it trained several, else one with the run's
  value and test accuracy. Such runs carry no key, so two of them count once when their resolved
  config (seed included, as stored) and their results are equal: the identical repeats of the
  old code. A run that reused a recorded training (`reused_from_run`) adds nothing of its own.

Counts, means and spreads are aggregated in SQL, so a study of 100,000 trainings costs one
grouped statement, not 100,000 rows in Python; only the records of ledger-less runs of several
seeds (older studies with `seeds` > 1) are read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Text, cast, exists, func, select, union_all
from sqlalchemy.orm import Session

from service.db import Run, Study, Training, TrainingState
from service.evidence import (
    EMPTY,
    FamilyEvidence,
    Stage,
    Summary,
    compare_families,
    from_moments,
    merge,
)
from service.evidence import summarize as summarize_values
from service.store.queries.summaries import SCORED

METRICS: dict[Stage, str] = {"search": "val_acc", "confirm": "test_acc"}


@dataclass(frozen=True)
class FamilyTrainings:
    """One family's distinct complete trainings, summarised per metric."""

    trainings: int
    val_acc: Summary = EMPTY
    test_acc: Summary = EMPTY

    def merged(self, other: FamilyTrainings) -> FamilyTrainings:
        """Both sets of trainings together."""
        return FamilyTrainings(
            self.trainings + other.trainings,
            merge(self.val_acc, other.val_acc),
            merge(self.test_acc, other.test_acc),
        )


StudyTrainings = dict[str, FamilyTrainings]


@dataclass(frozen=True)
class Comparison:
    """One family's trainings against the baseline family's, on one metric of one study.

    stage "search": the study's own trainings on validation accuracy (the objective), verdict at
    most "promising". stage "confirm": a confirm study's fresh seeds on test accuracy, verdicts
    "better" / "worse" / "no evidence". Accuracies are fractions; p-values Holm-adjusted.
    """

    study_id: int  # whose trainings
    stage: str
    metric: str  # the one compared: val_acc or test_acc
    trainings: int  # distinct complete trainings with a value of the metric
    mean: float | None
    ci_low: float | None  # 95 % t interval of the mean (None below two trainings)
    ci_high: float | None
    delta: float | None  # mean minus the baseline family's mean (None for the baseline)
    delta_ci_low: float | None  # 95 % Welch–Satterthwaite interval of the difference
    delta_ci_high: float | None
    p_value: float | None  # Welch, two-sided, Holm-adjusted across the study's families
    p_raw: float | None  # before the correction
    verdict: str
    val_mean: float | None  # both metrics' means, whichever is compared
    test_mean: float | None


def _unledgered_ids(study_id: int) -> Select[Any]:
    """The complete runs of a study that no ledger row speaks for (stored before it), by id:
    the partial index ix_as_runs_study_unreused holds exactly the candidates (0011)."""
    return select(Run.id).where(
        Run.study_id == study_id,
        SCORED,
        Run.family.is_not(None),
        Run.reused_from_run.is_(None),
        ~exists().where(Training.run_id == Run.id),
    )


def study_trainings(session: Session, study_id: int, *, seeds: int = 2) -> StudyTrainings:
    """Every family's distinct complete trainings (ledger, and runs it never saw), summarised.

    `seeds`: the study's seeds per trial; with one, no run can have trained several (and the
    records of such runs are not looked for)."""
    # The first complete row of each key: one pass over ix_as_trainings_study_key in key order
    # (the group-then-join-back form probed the table once per training: 280 ms at 100,000).
    ordered = (
        select(
            Training.family.label("family"),
            Training.val_acc.label("val"),
            Training.test_acc.label("test"),
            Training.key.label("key"),
            func.lag(Training.key).over(order_by=(Training.key, Training.id)).label("previous"),
        )
        .where(Training.study_id == study_id, Training.state == TrainingState.COMPLETE)
        .subquery()
    )
    ledger = select(ordered.c.family, ordered.c.val, ordered.c.test).where(
        ordered.c.previous.is_distinct_from(ordered.c.key)
    )
    # One seed each (several-seed runs are read below); the stored config text is its identity.
    # The ledger-less runs are found on two indexes first; only they are read for their config.
    identity = func.coalesce(cast(Run.config, Text), cast(Run.id, Text))
    legacy = (
        select(Run.family, Run.value, Run.test_acc, identity)
        .where(Run.id.in_(_unledgered_ids(study_id).where(Run.value_std.is_(None))))
        .distinct()
        .subquery()
    )
    rows = union_all(ledger, select(legacy.c.family, legacy.c.value, legacy.c.test_acc)).subquery(
        "trainings"
    )
    found = _aggregate(session, rows)
    several = _several_seeds(session, study_id) if seeds > 1 else {}
    for family, extra in several.items():
        found[family] = found[family].merged(extra) if family in found else extra
    return found


SHIFT = 0.5  # accuracies are fractions: sums of (v − ½)² lose little to cancellation


def _aggregate(session: Session, rows: Any) -> StudyTrainings:
    """Per family: trainings, and per metric its count, mean and squared deviations, from sums
    of values shifted by ½ (one pass; relative error ≈ 1e-12 at 10,000 trainings)."""
    val, test = rows.c.val - SHIFT, rows.c.test - SHIFT
    statement = select(
        rows.c.family,
        func.count(),
        func.count(rows.c.val),
        func.sum(val),
        func.sum(val * val),
        func.count(rows.c.test),
        func.sum(test),
        func.sum(test * test),
    ).group_by(rows.c.family)
    out: StudyTrainings = {}
    for family, n, *sums in session.execute(statement):
        summaries = moments_summary(*sums[:3]), moments_summary(*sums[3:])
        out[str(family)] = FamilyTrainings(int(n), *summaries)
    return out


def moments_summary(n: Any, total: Any, squares: Any) -> Summary:
    """A metric's summary from its count and shifted sums."""
    count = int(n or 0)
    if not count or total is None or squares is None:
        return EMPTY
    total, squares = float(total), float(squares)
    return from_moments(count, SHIFT + total / count, squares - total * total / count)


def _several_seeds(session: Session, study_id: int) -> StudyTrainings:
    """Ledger-less runs of several seeds: one training per seed of their record (distinct by
    config, seed and results)."""
    rows = session.execute(
        select(Run.family, Run.config, Run.record, Run.value, Run.test_acc).where(
            Run.id.in_(_unledgered_ids(study_id).where(Run.value_std.is_not(None)))
        )
    ).all()
    seen: set[str] = set()
    values: dict[str, tuple[list[float], list[float], int]] = {}
    for family, config, record, value, test_acc in rows:
        entries = (record or {}).get("seeds")
        if not isinstance(entries, list) or not entries:  # no per-seed results: the run's own
            entries = [{"val_acc": value, "test_acc": test_acc}]
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            identity = repr((sorted((config or {}).items()), sorted(entry.items())))
            if identity in seen:
                continue
            seen.add(identity)
            val, test, n = values.setdefault(str(family), ([], [], 0))
            _append_finite(val, entry.get("val_acc"))
            _append_finite(test, entry.get("test_acc"))
            values[str(family)] = (val, test, n + 1)
    return {
        family: FamilyTrainings(n, summarize_values(val), summarize_values(test))
        for family, (val, test, n) in values.items()
    }


def _append_finite(values: list[float], value: Any) -> None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        values.append(float(value))


def compare(
    trainings: Mapping[str, FamilyTrainings], baseline: str, study_id: int, stage: Stage
) -> dict[str, Comparison]:
    """Each family of `trainings` against the baseline on the stage's metric."""
    metric = METRICS[stage]
    samples = {family: getattr(t, metric) for family, t in trainings.items()}
    found = compare_families(samples, baseline, stage)
    return {
        family: _comparison(found[family], t, study_id, stage, metric)
        for family, t in trainings.items()
    }


def _comparison(
    evidence: FamilyEvidence,
    trainings: FamilyTrainings,
    study_id: int,
    stage: Stage,
    metric: str,
) -> Comparison:
    interval, delta_interval = evidence.interval, evidence.delta_interval
    return Comparison(
        study_id=study_id,
        stage=stage,
        metric=metric,
        trainings=evidence.n,
        mean=evidence.mean,
        ci_low=interval.low if interval else None,
        ci_high=interval.high if interval else None,
        delta=evidence.delta,
        delta_ci_low=delta_interval.low if delta_interval else None,
        delta_ci_high=delta_interval.high if delta_interval else None,
        p_value=evidence.p_value,
        p_raw=evidence.p_raw,
        verdict=evidence.verdict,
        val_mean=trainings.val_acc.mean,
        test_mean=trainings.test_acc.mean,
    )


@dataclass(frozen=True)
class Links:
    """A study's confirm links: the study it confirms, and the studies confirming it."""

    confirms: int | None
    confirmed_by: list[int]


def confirm_links(session: Session, study_id: int, confirms: int | None) -> Links:
    """The confirm studies of a study (oldest first) and the one it confirms."""
    confirmed_by = list(
        session.scalars(
            select(Study.id).where(Study.confirms_study_id == study_id).order_by(Study.id)
        )
    )
    return Links(confirms=confirms, confirmed_by=confirmed_by)


def confirmation(
    read: Callable[[int], StudyTrainings], study_id: int, links: Links, own: StudyTrainings
) -> tuple[int, StudyTrainings] | None:
    """Whose fresh-seed trainings confirm this study's families: its own when it is a confirm
    study, else those of its newest confirm study with a complete training (None: none yet).
    `read(study id)`: a study's trainings."""
    if links.confirms is not None:
        return study_id, own
    for confirm_id in reversed(links.confirmed_by):
        found = read(confirm_id)
        if found:
            return confirm_id, found
    return None
