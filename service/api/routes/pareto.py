"""A multi-objective study's Pareto front (accuracy against its measured cost)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import etag
from service.api.deps import CurrentUser, StoreDep
from service.api.pareto_schemas import ParetoFront
from service.api.routes.studies import StudyId
from service.api.schemas import error_responses
from service.store.queries.pareto import pareto

router = APIRouter(tags=["studies"])


@router.get(
    "/studies/{study_id}/pareto",
    response_model=ParetoFront,
    dependencies=[etag.STUDY],
    responses={
        200: {"description": "the front", "headers": etag.TAG_HEADER},
        **etag.NOT_MODIFIED,
        **error_responses(401, 404, 422),
    },
)
def get_pareto(study_id: StudyId, store: StoreDep, _user: CurrentUser) -> ParetoFront:
    """The complete trials of a study with a cost objective and their Pareto front.

    A trial is on the front unless another complete trial is at least as accurate and at most
    as costly, and better in one: Optuna's `study.best_trials` for directions [maximize,
    minimize]. The cost is measured on the worker (`devices`); a study without a cost
    objective has no points.
    """
    return ParetoFront.model_validate(pareto(store.db, study_id))
