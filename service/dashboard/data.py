"""Dashboard-only JSON under /dashboard/data: the chart data and summaries the REST API lacks.

Lists, details, trials, workers and every action go through /api/v1 (the pages call it with the
session cookie); these routes add what only the dashboard draws. Same authentication.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request, Response

from search_space.spec import SpecError, parse_spec
from service.api import etag
from service.api.deps import CurrentUser, StoreDep
from service.dashboard import queries
from service.store.exports import Download, leaderboard_download, study_summary
from service.store.queries import leaderboard

# Kept out of the OpenAPI document: these shapes serve the pages, not API clients.
router = APIRouter(prefix="/dashboard/data", include_in_schema=False)


@router.get("/studies/{study_id}/summary", dependencies=[etag.STUDY])
def summary(study_id: int, _: CurrentUser, store: StoreDep) -> dict[str, Any]:
    """Family leaderboard (per-state counts, best, median; trainings, mean and Δ with their 95 %
    intervals, verdicts), the headline and the confirm links."""
    return study_summary(leaderboard(store.db, study_id))


@router.get("/studies/{study_id}/values", dependencies=[etag.STUDY])
def values(study_id: int, _: CurrentUser, store: StoreDep) -> dict[str, Any]:
    """Column arrays (number, family, state, value) of all trials: history and distributions."""
    store.studies.get(study_id)
    return queries.trial_values(store.db, study_id)


@router.get("/studies/{study_id}/importance", dependencies=[etag.STUDY])
def importance(study_id: int, request: Request, _: CurrentUser, store: StoreDep) -> dict[str, Any]:
    """Parameter importance per family (Optuna PED-ANOVA on that family's complete trials), and
    the parameters the spec searches (a study without complete trials still has them)."""
    study = store.studies.get(study_id)
    return {
        "families": request.app.state.importance.for_study(store.db, study_id),
        "searched": searched_params(study.spec),
    }


def searched_params(spec: dict[str, Any]) -> list[str]:
    """The Optuna parameters a stored spec searches, the family choice left out."""
    try:
        dims = parse_spec(spec).search_space()
    except SpecError:  # a spec stored by an older version: nothing to say rather than a 500
        return []
    return [dim.name for dim in dims if dim.name != "activation"]


@router.get("/studies/{study_id}/spec")
def spec_yaml(study_id: int, _: CurrentUser, store: StoreDep) -> dict[str, Any]:
    """A study's spec as YAML, to open in the spec editor (Clone): every field as stored."""
    study = store.studies.get(study_id)
    header = f"# A clone of study {study.id} ({study.name}): change what you like, then submit.\n"
    text = yaml.safe_dump(study.spec, sort_keys=False, allow_unicode=True, width=100)
    return {"id": study.id, "name": study.name, "yaml": header + text}


@router.get("/studies/{study_id}/params", dependencies=[etag.STUDY])
def params(
    study_id: int,
    family: str,
    _: CurrentUser,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """A family's parameters and values of its best complete trials (parallel coordinates)."""
    store.studies.get(study_id)
    rows = queries.family_params(store.db, study_id, family, limit=limit)
    names = sorted({name for _, p, _ in rows for name in p if name != "activation"})
    return {
        "family": family,
        "params": names,
        "number": [number for number, _, _ in rows],
        "value": [value for _, _, value in rows],
        "columns": {name: [p.get(name) for _, p, _ in rows] for name in names},
    }


@router.get("/studies/{study_id}/curves", dependencies=[etag.LIVE])
def curves(
    study_id: int,
    _: CurrentUser,
    store: StoreDep,
    family: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 30,
) -> dict[str, Any]:
    """Learning curves of the best complete, the running and recently pruned trials."""
    store.studies.get(study_id)
    return {"trials": queries.learning_curves(store.db, study_id, family or None, limit)}


def _attachment(download: Download) -> Response:
    return Response(
        download.text,
        media_type=download.media_type,
        headers={"Content-Disposition": f'attachment; filename="{download.filename}"'},
    )


@router.get("/studies/{study_id}/leaderboard.csv")
def leaderboard_csv(study_id: int, _: CurrentUser, store: StoreDep) -> Response:
    """The family leaderboard as CSV: the API's `leaderboard?format=csv`, byte for byte."""
    return _attachment(leaderboard_download(leaderboard(store.db, study_id), "csv"))


@router.get("/studies/{study_id}/leaderboard.tex")
def leaderboard_tex(study_id: int, _: CurrentUser, store: StoreDep) -> Response:
    """The family leaderboard as LaTeX: the API's `leaderboard?format=latex`, byte for byte."""
    return _attachment(leaderboard_download(leaderboard(store.db, study_id), "latex"))
