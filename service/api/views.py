"""Domain objects from the store turned into response schemas."""

from __future__ import annotations

from typing import Any

from service.api.schemas import (
    BestTrial,
    CampaignDetail,
    CampaignLinks,
    CampaignPublic,
    CampaignStage,
    Comparison,
    FamilySummary,
    Progress,
    StageStudy,
    StudyDetail,
    StudyLinks,
    StudyPublic,
    StudyRef,
    TransferCell,
    TransferTable,
)
from service.store import CampaignInfo, StudyInfo
from service.store.queries import BestRun, FamilyStats, StudyDetailView, StudyLink, progress
from service.store.queries import campaigns as campaign_views

API = "/api/v1"


def study_links(study_id: int) -> StudyLinks:
    """Where a study's parts live (paths on this server)."""
    base = f"{API}/studies/{study_id}"
    return StudyLinks(
        self=base,
        trials=f"{base}/trials",
        leaderboard=f"{base}/leaderboard",
        export_csv=f"{base}/export.csv",
        export_json=f"{base}/export.json",
        dashboard=f"/studies/{study_id}",
    )


def best_trial(best: BestRun | None) -> BestTrial | None:
    """The best trial's summary, if any trial completed."""
    if best is None:
        return None
    return BestTrial(number=best.number, value=best.value, family=best.family, params=best.params)


def _study_fields(study: StudyInfo, best: BestRun | None) -> dict[str, Any]:
    return {
        "id": study.id,
        "name": study.name,
        "description": study.description,
        "owner": study.owner,
        "owner_id": study.owner_id,
        "status": study.status,
        "priority": study.priority,
        "n_trials": study.n_trials,
        "error": study.error,
        "created_at": study.created_at,
        "updated_at": study.updated_at,
        "started_at": study.started_at,
        "finished_at": study.finished_at,
        "progress": Progress(**progress(study)),
        "best": best_trial(best),
        "links": study_links(study.id),
    }


def study_public(study: StudyInfo, best: BestRun | None) -> StudyPublic:
    """A study as listed."""
    return StudyPublic(**_study_fields(study, best))


def family_summary(stats: FamilyStats) -> FamilySummary:
    """One family's summary."""
    return FamilySummary(
        family=stats.family, runs=stats.runs, n=stats.n, best=stats.best, mean=stats.mean,
        std=stats.std,
    )  # fmt: skip


def study_ref(link: StudyLink) -> StudyRef:
    """Another study, named and linked."""
    return StudyRef(
        id=link.id,
        name=link.name,
        status=link.status,
        self=f"{API}/studies/{link.id}",
        dashboard=f"/studies/{link.id}",
    )


def study_detail(view: StudyDetailView) -> StudyDetail:
    """A study with spec, per-family summary and confirm links."""
    return StudyDetail(
        **_study_fields(view.study, view.best),
        spec=view.study.spec,
        families=[family_summary(f) for f in view.families],
        confirms=study_ref(view.confirms) if view.confirms else None,
        confirmed_by=[study_ref(link) for link in view.confirmed_by],
        campaign_id=view.study.campaign_id,
        stage=view.study.stage,
    )


# -- campaigns ---------------------------------------------------------------------------------
def campaign_public(info: CampaignInfo) -> CampaignPublic:
    """A campaign as listed."""
    return CampaignPublic(**_campaign_fields(info))


def _campaign_fields(info: CampaignInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "description": info.description,
        "owner": info.owner,
        "owner_id": info.owner_id,
        "status": info.status,
        "stage": info.stage,
        "stages": info.stages,
        "stage_ready": info.stage_ready,
        "error": info.error,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "finished_at": info.finished_at,
        "links": CampaignLinks(
            self=f"{API}/campaigns/{info.id}", dashboard=f"/campaigns/{info.id}"
        ),
    }


def _cell(cell: campaign_views.TransferCell) -> TransferCell:
    return TransferCell(
        family=cell.family,
        model=cell.model,
        study_id=cell.study_id,
        comparison=Comparison.model_validate(cell.comparison),
    )


def _stage_study(entry: campaign_views.StageStudy) -> StageStudy:
    study = entry.study
    return StageStudy(
        id=study.id,
        name=study.name,
        status=study.status,
        model=entry.model,
        trainings=entry.trainings,
        progress=Progress(**progress(study)),
        self=f"{API}/studies/{study.id}",
        dashboard=f"/studies/{study.id}",
    )


def _stage(stage: campaign_views.StageView, info: CampaignInfo) -> CampaignStage:
    promotion = next((p for p in info.promotions if p.get("stage") == stage.index), None)
    return CampaignStage(
        index=stage.index,
        name=stage.name,
        models=stage.models,
        state=stage.state,  # type: ignore[arg-type]
        kind=stage.kind,  # type: ignore[arg-type]
        entered=stage.entered,
        left=stage.left,
        dropped=stage.dropped,
        trainings=stage.trainings,
        train_s=stage.train_s,
        wall_s=stage.wall_s,
        started_at=stage.started_at,
        finished_at=stage.finished_at,
        studies=[_stage_study(s) for s in stage.studies],
        cells=[_cell(c) for c in stage.cells],
        promotion=promotion,
    )


def campaign_detail(view: campaign_views.CampaignView) -> CampaignDetail:
    """A campaign with its document, funnel and transfer table."""
    table = view.transfer
    return CampaignDetail(
        **_campaign_fields(view.campaign),
        spec=view.campaign.spec,
        baseline=view.baseline,
        funnel=[_stage(stage, view.campaign) for stage in view.stages],
        transfer=TransferTable(
            stage=table.stage,
            models=table.models,
            families=table.families,
            cells=[_cell(c) for c in table.cells],
        )
        if table
        else None,
    )
