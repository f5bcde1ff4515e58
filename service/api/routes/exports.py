"""Exports of a study's trials (CSV, JSON) and its per-family leaderboard (JSON, CSV, LaTeX)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from service.api import etag
from service.api.deps import CurrentUser, StoreDep
from service.api.routes.studies import StudyId
from service.api.schemas import (
    Leaderboard,
    LeaderboardRow,
    StudyExport,
    TrialExport,
    error_responses,
)
from service.api.views import study_detail
from service.store.exports import (
    flag_front,
    leaderboard_download,
    leaderboard_rows,
    trials_download,
)
from service.store.queries import EVIDENCE, RANKING, export_trials, leaderboard
from service.store.queries import study_detail as load_study_detail
from service.store.queries.pareto import pareto

router = APIRouter(tags=["exports"])


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}
}


def _trials(store: StoreDep, study_id: int) -> list[dict[str, Any]]:
    """Every trial of the study, those on a multi-objective study's Pareto front flagged."""
    return flag_front(export_trials(store.db, study_id), pareto(store.db, study_id))


@router.get(
    "/studies/{study_id}/export.csv",
    response_class=Response,
    responses={**CSV_RESPONSE, **error_responses(401, 404, 422)},
)
def export_csv(study_id: StudyId, store: StoreDep, _user: CurrentUser) -> Response:
    """Every trial (attempt) of a study as CSV, one column per parameter."""
    download = trials_download(study_id, _trials(store, study_id))
    return Response(
        download.text,
        media_type=download.media_type,
        headers={"Content-Disposition": f'attachment; filename="{download.filename}"'},
    )


@router.get(
    "/studies/{study_id}/export.json",
    response_model=StudyExport,
    responses=error_responses(401, 404, 422),
)
def export_json(study_id: StudyId, store: StoreDep, _user: CurrentUser) -> StudyExport:
    """A study (with its spec and summary) and every trial with params and resolved config."""
    study = study_detail(load_study_detail(store.db, study_id))
    trials = [TrialExport.model_validate(row) for row in _trials(store, study_id)]
    return StudyExport(study=study, trials=trials)


@router.get(
    "/studies/{study_id}/leaderboard",
    response_model=Leaderboard,
    dependencies=[etag.STUDY],
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-latex": {"schema": {"type": "string"}},
            },
            "description": "the leaderboard as JSON, CSV or LaTeX (see `format`)",
            "headers": etag.TAG_HEADER,
        },
        **etag.NOT_MODIFIED,
        **error_responses(401, 404, 422),
    },
)
def get_leaderboard(
    study_id: StudyId,
    store: StoreDep,
    _user: CurrentUser,
    format: Annotated[Literal["json", "csv", "latex"], Query()] = "json",
) -> Any:
    """Activation families with a complete trial, ranked by their best value (then mean).

    Columns: n, mean ± std, median, best (its trial, test accuracy), mean test accuracy, and Δ
    mean / Δ best against the baseline family (statistics of trials). The evidence counts
    trainings: `search` (this study's, validation accuracy: mean and Δ with 95 % intervals,
    Holm-adjusted Welch p-value, "promising" at most) and `confirmation` (a confirm study's
    fresh seeds, test accuracy: "better" / "worse" / "no evidence"). The dashboard ranks the
    same way; CSV and LaTeX carry the same numbers.
    """
    board = leaderboard(store.db, study_id)
    if format != "json":
        download = leaderboard_download(board, format)
        return Response(download.text, media_type=download.media_type)
    return Leaderboard(
        study_id=study_id,
        baseline=board.baseline,
        ranked_by=board.ranked_by,
        ranking=RANKING,
        rows=[LeaderboardRow.model_validate(row) for row in leaderboard_rows(board)],
        evidence=EVIDENCE,
        alpha=board.alpha,
        confirms=board.confirms,
        confirmed_by=board.confirmed_by,
        confirmation_study_id=board.confirmation_study_id,
    )
