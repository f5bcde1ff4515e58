"""The campaign read model: its stages as a funnel, and the family × model transfer table.

What the API (and the dashboard's campaign page, the CLI's status) show of a campaign, computed
with the statistics of every leaderboard (service.store.queries.evidence, service.evidence):

- per stage: its studies (one per model), the configurations that entered it (the first
  stage: the distinct ones it trained so far; a later stage: the promoted ones plus the
  baselines), those it promoted onwards and the families it dropped, its distinct complete
  trainings, the training time its runs took and its wall time, and each family's comparison
  with the baseline on each model (Δ with its interval, Holm-adjusted p-value, verdict);
- the transfer table: those comparisons for the latest stage with several models, a row per
  family and a column per model.

The first stage's comparisons are search comparisons (validation accuracy, "promising" at most):
it chose the configurations. A later stage runs exactly the configurations promoted into it
with seeds no earlier stage used, so its trainings took no part in choosing them: its
comparisons are on test accuracy and can say "better" or "worse" (docs/evidence.md), like a
confirm study's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from service.db import FINAL_STUDY_STATUSES, Run, Study, User, utcnow
from service.db.types import as_utc
from service.evidence import Stage
from service.store.base import Database
from service.store.campaigns import CampaignInfo, Campaigns
from service.store.queries.evidence import Comparison, compare, study_trainings
from service.store.queries.leaderboard import baseline_family
from service.store.studies import StudyInfo, run_counts, study_info

STAGE_STATES = ("waiting", "setting up", "running", "ended")


@dataclass(frozen=True)
class TransferCell:
    """One family on one model of a stage, against that model's baseline trainings."""

    family: str
    model: str | None
    study_id: int
    comparison: Comparison


@dataclass(frozen=True)
class StageStudy:
    """One study of a stage (one per model)."""

    study: StudyInfo
    model: str | None
    trainings: int  # distinct complete trainings


@dataclass(frozen=True)
class StageView:
    """One stage of the funnel."""

    index: int
    name: str
    models: list[str | None]
    state: str  # one of STAGE_STATES
    kind: str  # search (the first stage) or confirm: which comparison its cells are
    studies: list[StageStudy]
    entered: int | None  # configurations that entered (None: the stage has not started)
    left: int | None  # configurations promoted onwards (None: not promoted, or the last stage)
    dropped: dict[str, str]  # families the promotion rule dropped, with the reason
    trainings: int
    train_s: float  # the stage's runs' training time, summed
    wall_s: float | None  # first start to last end (or now)
    started_at: datetime | None
    finished_at: datetime | None
    cells: list[TransferCell] = field(default_factory=list)  # family × model


@dataclass(frozen=True)
class TransferTable:
    """Δ vs the baseline for each family (rows) on each model (columns) of one stage."""

    stage: int
    models: list[str | None]
    families: list[str]
    cells: list[TransferCell]


@dataclass(frozen=True)
class CampaignView:
    """A campaign with its funnel and transfer table."""

    campaign: CampaignInfo
    baseline: str
    stages: list[StageView]
    transfer: TransferTable | None


def campaign_view(db: Database, campaign_id: int) -> CampaignView:
    """The campaign's funnel and transfer table (NotFound when there is none)."""
    info = Campaigns(db).get(campaign_id)
    stages_spec = info.spec.get("stages") or []
    with db.reading() as session:
        rows = session.execute(
            select(Study, User.name)
            .join(User, User.id == Study.owner_id)
            .where(Study.campaign_id == campaign_id)
            .order_by(Study.stage, Study.id)
        ).all()
        by_stage: dict[int, list[tuple[Study, str]]] = {}
        for row, owner in rows:
            by_stage.setdefault(int(row.stage or 0), []).append((row, owner))
        first = rows[0][0].spec if rows else info.spec
        baseline = baseline_family(dict(first))
        stages = [
            _stage(session, info, index, stage, by_stage.get(index, []), baseline)
            for index, stage in enumerate(stages_spec)
        ]
    return CampaignView(campaign=info, baseline=baseline, stages=stages, transfer=_transfer(stages))


def _stage(
    session: Session,
    info: CampaignInfo,
    index: int,
    stage: dict[str, Any],
    rows: list[tuple[Study, str]],
    baseline: str,
) -> StageView:
    kind: Stage = "search" if index == 0 else "confirm"
    studies: list[StageStudy] = []
    cells: list[TransferCell] = []
    for row, owner in rows:
        trainings = study_trainings(session, row.id, seeds=int(row.spec.get("seeds") or 1))
        studies.append(
            StageStudy(
                study=study_info(row, owner, run_counts(session, row.id)),
                model=row.stage_model,
                trainings=sum(t.trainings for t in trainings.values()),
            )
        )
        for family, comparison in sorted(compare(trainings, baseline, row.id, kind).items()):
            cells.append(TransferCell(family, row.stage_model, row.id, comparison))
    promotion = next((p for p in info.promotions if p.get("stage") == index), None)
    ids = [row.id for row, _ in rows]
    started, finished = _span(rows)
    return StageView(
        index=index,
        name=str(stage.get("name") or f"stage {index + 1}"),
        models=_models(stage, rows),
        state=_state(info, index, rows),
        kind=kind,
        studies=studies,
        entered=_entered(session, index, rows) if rows else None,
        left=len(promotion.get("carried") or []) if promotion else None,
        dropped=dict(promotion.get("dropped") or {}) if promotion else {},
        trainings=sum(s.trainings for s in studies),
        train_s=_train_s(session, ids),
        wall_s=(((finished or utcnow()) - started).total_seconds() if started else None),
        started_at=started,
        finished_at=finished,
        cells=cells,
    )


def _models(stage: dict[str, Any], rows: list[tuple[Study, str]]) -> list[str | None]:
    if rows:
        return [row.stage_model for row, _ in rows]
    model = stage.get("model")
    entries = model if isinstance(model, list) else [model]
    return [e if isinstance(e, str) else (e or {}).get("name") for e in entries]


def _state(info: CampaignInfo, index: int, rows: list[tuple[Study, str]]) -> str:
    if not rows:
        return "waiting"
    if index == info.stage and not info.stage_ready:
        return "setting up"
    if all(row.status in FINAL_STUDY_STATUSES for row, _ in rows):
        return "ended"
    return "running"


def _entered(session: Session, index: int, rows: list[tuple[Study, str]]) -> int:
    """The configurations of a stage: the first's distinct ones trained or training; a later
    stage's enqueued ones and its baselines (each study of a stage has the same)."""
    if index:
        spec = rows[0][0].spec
        return len(spec.get("enqueue") or []) + len(spec.get("baselines") or [])
    ids = [row.id for row, _ in rows]
    count = session.scalar(
        select(func.count(func.distinct(cast(Run.params, Text)))).where(
            Run.study_id.in_(ids), Run.params.is_not(None)
        )
    )
    return int(count or 0)


def _train_s(session: Session, ids: list[int]) -> float:
    if not ids:
        return 0.0
    total = session.scalar(select(func.sum(Run.duration_s)).where(Run.study_id.in_(ids)))
    return float(total or 0.0)


def _span(rows: list[tuple[Study, str]]) -> tuple[datetime | None, datetime | None]:
    """The stage's first start and, once every study ended, its last end."""
    starts = [as_utc(row.started_at) for row, _ in rows if row.started_at is not None]
    ends = [as_utc(row.finished_at) for row, _ in rows if row.finished_at is not None]
    ended = rows and len(ends) == len(rows)
    return (min(starts) if starts else None, max(ends) if ended and ends else None)


def _transfer(stages: list[StageView]) -> TransferTable | None:
    """The latest stage with studies on several models, as a family × model table."""
    for stage in reversed(stages):
        if len(stage.studies) > 1:
            families = sorted({cell.family for cell in stage.cells})
            return TransferTable(stage.index, stage.models, families, stage.cells)
    return None
