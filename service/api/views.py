"""Domain objects from the store turned into response schemas."""

from __future__ import annotations

from typing import Any

from service.api.schemas import (
    BestTrial,
    FamilySummary,
    Progress,
    StudyDetail,
    StudyLinks,
    StudyPublic,
    StudyRef,
)
from service.store import StudyInfo
from service.store.queries import BestRun, FamilyStats, StudyDetailView, StudyLink, progress

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
    )
