"""A study's trainings per family and their comparisons with the baseline (service.evidence).

The unit is the training (EVIDENCE.md): one configuration and one seed. Identical repeats count
once. Where the samples come from:

- the trainings ledger (as_trainings, migration 0005): a study's complete trainings, one per
  distinct `key` (the key is exact: canonical config, seed, data and code version);
- runs the ledger never saw (stored before it existed): each complete run stands for its own
  trainings, one per seed of `record["seeds"]` when it trained several, else one with the run's
  value and test accuracy. Such runs carry no key, so two of them count once when their resolved
  config (seed included) and their results are equal: the identical repeats of the old code.
  A run that reused a recorded training (`reused_from_run`) adds nothing of its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from service.db import Run, Study, Training, TrainingState
from service.evidence import FamilyEvidence, Stage, compare_families
from service.store.queries.summaries import SCORED

METRICS: dict[Stage, str] = {"search": "val_acc", "confirm": "test_acc"}


@dataclass(frozen=True)
class TrainingResult:
    """What one training measured."""

    val_acc: float | None
    test_acc: float | None


FamilyTrainings = dict[str, list[TrainingResult]]


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


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def study_trainings(session: Session, study_id: int) -> FamilyTrainings:
    """Every family's distinct complete trainings (ledger first, then runs it never saw)."""
    families: FamilyTrainings = {}
    seen: set[str] = set()
    ledger = session.execute(
        select(Training.family, Training.key, Training.val_acc, Training.test_acc)
        .where(Training.study_id == study_id, Training.state == TrainingState.COMPLETE)
        .order_by(Training.id)
    )
    for family, key, val_acc, test_acc in ledger:
        if key not in seen:
            seen.add(key)
            families.setdefault(family, []).append(TrainingResult(val_acc, test_acc))
    for family, key, result in _unledgered(session, study_id):
        if key not in seen:
            seen.add(key)
            families.setdefault(family, []).append(result)
    return families


def _unledgered(session: Session, study_id: int) -> list[tuple[str, str, TrainingResult]]:
    """(family, identity, result) of each training of the study's runs without ledger rows."""
    rows = session.execute(
        select(Run.id, Run.family, Run.config, Run.value, Run.test_acc, Run.value_std)
        .where(
            Run.study_id == study_id,
            SCORED,
            Run.family.is_not(None),
            Run.reused_from_run.is_(None),
            ~exists().where(Training.run_id == Run.id),
        )
        .order_by(Run.id)
    ).all()
    # Only runs of several seeds (value_std set) need their record, which is large: read those.
    several = [row.id for row in rows if row.value_std is not None]
    seeds = _seed_results(session, several) if several else {}
    out = []
    for row in rows:
        config = dict(row.config or {})
        first_seed = config.pop("seed", None)
        config.pop("seeds", None)
        per_seed = seeds.get(row.id) or [(first_seed, TrainingResult(row.value, row.test_acc))]
        for seed, result in per_seed:
            identity = [config, seed, result.val_acc, result.test_acc] if config else [row.id, seed]
            out.append(
                (
                    str(row.family),
                    "run:" + json.dumps(identity, sort_keys=True, default=str),
                    result,
                )
            )
    return out


def _seed_results(
    session: Session, run_ids: list[int]
) -> dict[int, list[tuple[Any, TrainingResult]]]:
    """Each run's per-seed results from its record's "seeds" (workers.attempt writes them)."""
    out: dict[int, list[tuple[Any, TrainingResult]]] = {}
    for run_id, record in session.execute(select(Run.id, Run.record).where(Run.id.in_(run_ids))):
        entries = (record or {}).get("seeds")
        if isinstance(entries, list) and entries:
            out[run_id] = [
                (e.get("seed"), TrainingResult(e.get("val_acc"), e.get("test_acc")))
                for e in entries
                if isinstance(e, dict)
            ]
    return out


def compare(
    trainings: Mapping[str, list[TrainingResult]], baseline: str, study_id: int, stage: Stage
) -> dict[str, Comparison]:
    """Each family of `trainings` against the baseline on the stage's metric."""
    metric = METRICS[stage]
    samples = {
        family: _finite(getattr(r, metric) for r in results)
        for family, results in trainings.items()
    }
    found = compare_families(samples, baseline, stage)
    return {
        family: _comparison(found[family], results, study_id, stage, metric)
        for family, results in trainings.items()
    }


def _comparison(
    evidence: FamilyEvidence,
    results: list[TrainingResult],
    study_id: int,
    stage: Stage,
    metric: str,
) -> Comparison:
    val, test = _finite(r.val_acc for r in results), _finite(r.test_acc for r in results)
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
        val_mean=math.fsum(val) / len(val) if val else None,
        test_mean=math.fsum(test) / len(test) if test else None,
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
    session: Session, study_id: int, links: Links, own: FamilyTrainings
) -> tuple[int, FamilyTrainings] | None:
    """Whose fresh-seed trainings confirm this study's families: its own when it is a confirm
    study, else those of its newest confirm study with a complete training (None: none yet)."""
    if links.confirms is not None:
        return study_id, own
    for confirm_id in reversed(links.confirmed_by):
        found = study_trainings(session, confirm_id)
        if found:
            return confirm_id, found
    return None
