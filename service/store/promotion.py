"""A campaign stage's promotion: which configurations go on to the next stage, and why.

The rule is the stage's `promote` (search_space.spec.campaign.PromoteSpec):

1. `min_delta` (accuracy points), when set, judged on the stage's own evidence: each family's Δ
   of mean validation accuracy against the baseline family, from the stage's trainings
   (service.store.queries.evidence, the statistics of every leaderboard); the mean of its
   studies' Δ in a transfer stage. A family below it is dropped; a family without a Δ (no
   baseline training to compare with) is kept, and the record says so.
2. the best distinct complete configurations by validation value, `top` per family or overall,
   with the selection of confirm studies (service.store.confirm.top_configurations); the
   baseline families are never promoted: every stage trains them at their defaults.
3. each configuration as the next stage enqueues it (CampaignSpec.carry): the family and its
   values always, a model or training value only where the next stage searches it.

The record (stored with the campaign, shown in its funnel) lists what was promoted with its
value, what was carried, and each dropped family with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from search_space.spec.campaign import CampaignSpec
from service.db import Study, utcnow
from service.store.confirm import top_configurations
from service.store.queries.evidence import compare, study_trainings
from service.store.queries.leaderboard import baseline_family

POINTS = 100.0  # accuracy fractions to points (pp)


@dataclass(frozen=True)
class Promotion:
    """What a stage promotes into the next one."""

    carried: list[dict[str, Any]]  # the next stage's `enqueue`
    record: dict[str, Any] = field(default_factory=dict)


def stage_deltas(session: Session, studies: list[Study], baseline: str) -> dict[str, float]:
    """Each family's Δ of mean validation accuracy against the baseline, in points: the mean
    over the studies where it has one (the search comparison of the leaderboard)."""
    found: dict[str, list[float]] = {}
    for study in studies:
        seeds = int((study.spec or {}).get("seeds") or 1)
        own = study_trainings(session, study.id, seeds=seeds)
        for family, comparison in compare(own, baseline, study.id, "search").items():
            if comparison.delta is not None and family != baseline:
                found.setdefault(family, []).append(comparison.delta * POINTS)
    return {family: sum(values) / len(values) for family, values in found.items()}


def _dropped(
    session: Session, studies: list[Study], baseline: str, min_delta: float | None
) -> dict[str, str]:
    """Families below min_delta, each with its reason ({} without a min_delta)."""
    if min_delta is None:
        return {}
    deltas = stage_deltas(session, studies, baseline)
    return {
        family: f"Δ {delta:+.2f} pp vs {baseline} < min_delta {min_delta:g} pp"
        for family, delta in sorted(deltas.items())
        if delta < min_delta
    }


def promote(
    session: Session, campaign: CampaignSpec, index: int, studies: list[Study]
) -> Promotion:
    """Stage `index`'s promotion into stage index + 1, from its completed `studies`."""
    rule = campaign.stages[index].promote
    if rule is None:  # the last stage: parse_campaign refuses a rule there
        raise ValueError(f"stage {index + 1} has no promotion rule")
    baselines = campaign.baselines
    baseline = baseline_family({"baselines": baselines})
    dropped = _dropped(session, studies, baseline, rule.min_delta)
    chosen = top_configurations(
        session,
        [study.id for study in studies],
        rule.top,
        per=rule.per,
        exclude={*baselines, *dropped},
    )
    carried = campaign.carry(index + 1, [candidate.params for candidate in chosen])
    record = {
        "stage": index,
        "at": utcnow().isoformat(),
        "rule": rule.model_dump(mode="json"),
        "studies": [study.id for study in studies],
        "promoted": [{"family": c.family, "params": c.params, "value": c.value} for c in chosen],
        "carried": carried,
        "baselines": baselines,
        "dropped": dropped,
    }
    return Promotion(carried=carried, record=record)
