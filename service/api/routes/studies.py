"""Studies: submit (JSON or YAML, idempotent), list, detail, lifecycle, delete, clone, retry,
confirm."""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from search_space.spec import SpecError, is_campaign, spec_warnings
from service.api import documents, etag
from service.api.deps import CurrentUser, StoreDep, check_owner
from service.api.schemas import (
    ConfirmRequest,
    FieldError,
    Page,
    StudyCreated,
    StudyDetail,
    StudyPublic,
    StudyStatusName,
    error_responses,
)
from service.api.views import study_detail, study_public
from service.store import Conflict, StudyInfo, UserInfo
from service.store.confirm import create_confirm_study
from service.store.queries import list_studies
from service.store.queries import study_detail as load_study_detail

router = APIRouter(tags=["studies"])

StudySort = Literal[
    "created", "-created", "priority", "-priority", "name", "-name", "best", "-best", "id", "-id"
]

StudyId = Annotated[int, Path(ge=1, le=2**31 - 1, description="study id")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="repeat a submission safely: the same key and spec answer with the first study",
    ),
]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$"


def _spec_body_schema() -> dict[str, Any]:
    """The request body's OpenAPI entry: the spec as JSON, or the same as YAML text."""
    try:
        from search_space.spec import StudySpec

        json_schema: dict[str, Any] = {"$ref": "#/components/schemas/StudySpec"}
        _ = StudySpec
    except ImportError:  # pragma: no cover - the spec module is part of the package
        json_schema = {"type": "object"}
    return {
        "requestBody": {
            "required": True,
            "description": "the study spec, as a JSON object or as YAML text",
            "content": {
                "application/json": {"schema": json_schema},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    }


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def decode_spec(raw: bytes, media_type: str) -> dict[str, Any]:
    """The submitted body as a mapping: JSON for JSON types, YAML (a JSON superset) otherwise."""
    return documents.decode(raw, media_type, what="the spec", yaml_too=True)


def _submit(
    store: StoreDep,
    user: UserInfo,
    raw: bytes,
    media_type: str,
    key: str | None,
    response: Response,
) -> StudyCreated:
    return _create(store, user, decode_spec(raw, media_type), key, response)


CAMPAIGN_HINT = (
    "a document with `stages` is a campaign, not a study spec: submit it to POST "
    "/api/v1/campaigns (`actsearch submit` and the dashboard's editor send it there by "
    "themselves; docs/campaigns.md)"
)


def _create(
    store: StoreDep,
    user: UserInfo,
    spec: dict[str, Any],
    key: str | None,
    response: Response,
) -> StudyCreated:
    if is_campaign(spec):  # else the spec's checks answer a bare "unknown field"
        raise SpecError([{"loc": "stages", "msg": CAMPAIGN_HINT}])
    study, created = store.studies.create(user, spec, idempotency_key=key)
    return _created(store, study, created, response)


def _created(store: StoreDep, study: StudyInfo, created: bool, response: Response) -> StudyCreated:
    """201 (200: an Idempotency-Key's replay) with the study and its spec's warnings."""
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/api/v1/studies/{study.id}"
    return StudyCreated(
        **_public(store, study.id).model_dump(),
        warnings=[FieldError(**warning) for warning in spec_warnings(study.spec)],
    )


@router.post(
    "/studies",
    response_model=StudyCreated,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_spec_body_schema(),
    responses={
        200: {
            "model": StudyCreated,
            "description": "replayed: this Idempotency-Key's earlier study",
        },
        **error_responses(401, 409, 413, 415, 422),
    },
)
async def create_study(
    request: Request,
    response: Response,
    store: StoreDep,
    user: CurrentUser,
    key: IdempotencyKey = None,
) -> StudyCreated:
    """Submit a study spec (JSON object or YAML text); 201 with its id, status, links and the
    spec's `warnings` (settings that run but not as written)."""
    media_type = _media_type(request)
    documents.check_media_type(media_type, what="the spec", yaml_too=True)
    raw = await request.body()  # at most MAX_BODY_BYTES: service.api.limits stops the read
    # Decoding a large spec is CPU work: in the threadpool, so other requests are served meanwhile.
    return await run_in_threadpool(_submit, store, user, raw, media_type, key, response)


@router.get(
    "/studies",
    response_model=Page[StudyPublic],
    dependencies=[etag.STUDIES],
    responses={**etag.CONDITIONAL, **error_responses(401, 422)},
)
def list_all_studies(
    store: StoreDep,
    _user: CurrentUser,
    status_: Annotated[
        list[StudyStatusName], Query(alias="status", description="any of these statuses")
    ] = [],  # noqa: B006
    owner: Annotated[str | None, Query(max_length=100, pattern=NAME_PATTERN)] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, pattern=r"^[^\x00]*$", description="text in name or description"),
    ] = None,
    sort: Annotated[StudySort, Query(description="key, '-' prefix for descending")] = "-created",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    cursor: Annotated[
        str | None, Query(max_length=1000, description="next_cursor of the previous page")
    ] = None,
) -> Page[StudyPublic]:
    """Studies, filtered and sorted, one page at a time (all users see all studies)."""
    page = list_studies(
        store.db, statuses=status_, owner=owner, q=q, sort=sort, limit=limit, offset=offset,
        cursor=cursor,
    )  # fmt: skip
    return Page[StudyPublic](
        items=[study_public(s.study, s.best) for s in page.items],
        total=page.total, limit=page.limit, offset=page.offset, next_cursor=page.next_cursor,
    )  # fmt: skip


@router.get(
    "/studies/{study_id}",
    response_model=StudyDetail,
    dependencies=[etag.STUDY],
    responses={**etag.CONDITIONAL, **error_responses(401, 404, 422)},
)
def get_study(study_id: StudyId, store: StoreDep, _user: CurrentUser) -> StudyDetail:
    """A study: status, spec, progress of its budget, best trial and per-family summary."""
    return study_detail(load_study_detail(store.db, study_id))


def _public(store: StoreDep, study_id: int) -> StudyPublic:
    """A study as listed, read after a change (progress and best trial included)."""
    view = load_study_detail(store.db, study_id)
    return study_public(view.study, view.best)


def _owned(store: StoreDep, user: UserInfo, study_id: int) -> StudyInfo:
    study = store.studies.get(study_id)
    check_owner(user, study)
    return study


def _transition(store: StoreDep, user: UserInfo, study_id: int, action: str) -> StudyPublic:
    _owned(store, user, study_id)
    store.studies.transition(study_id, action)
    return _public(store, study_id)


MUTATE_ERRORS = error_responses(401, 403, 404, 409, 422)


@router.post("/studies/{study_id}/cancel", response_model=StudyPublic, responses=MUTATE_ERRORS)
def cancel_study(study_id: StudyId, store: StoreDep, user: CurrentUser) -> StudyPublic:
    """Cancel: no new trials; running ones stop within one epoch (owner or admin)."""
    return _transition(store, user, study_id, "cancel")


@router.post("/studies/{study_id}/pause", response_model=StudyPublic, responses=MUTATE_ERRORS)
def pause_study(study_id: StudyId, store: StoreDep, user: CurrentUser) -> StudyPublic:
    """Pause: workers claim no new trials until resumed (owner or admin)."""
    return _transition(store, user, study_id, "pause")


@router.post("/studies/{study_id}/resume", response_model=StudyPublic, responses=MUTATE_ERRORS)
def resume_study(study_id: StudyId, store: StoreDep, user: CurrentUser) -> StudyPublic:
    """Resume a paused study (owner or admin); a failed or cancelled one is retried instead
    (POST /studies/{id}/retry: the 409 says so)."""
    return _transition(store, user, study_id, "resume")


@router.delete(
    "/studies/{study_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
def delete_study(study_id: StudyId, store: StoreDep, user: CurrentUser) -> Response:
    """Delete a study with its trials and Optuna study (owner or admin)."""
    _owned(store, user, study_id)
    store.studies.delete(study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


CLONE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "merged into the spec (JSON merge patch: null removes a field); "
        "none: an unchanged copy",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _clone(
    store: StoreDep,
    user: UserInfo,
    study_id: int,
    raw: bytes,
    media_type: str,
    key: str | None,
    response: Response,
) -> StudyCreated:
    changes = (
        documents.decode(raw, media_type, what="a clone's changes", yaml_too=False)
        if raw.strip()
        else {}
    )
    source = store.studies.get(study_id)
    try:
        spec = merge_patch(source.spec, changes)
    except RecursionError as error:  # a backstop: decode bounds the depth of the changes
        raise SpecError([{"loc": "body", "msg": documents.TOO_DEEP}]) from error
    return _create(store, user, spec, key, response)


@router.post(
    "/studies/{study_id}/clone",
    response_model=StudyCreated,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=CLONE_BODY,
    responses={
        200: {
            "model": StudyCreated,
            "description": "replayed: this Idempotency-Key's earlier study",
        },
        **error_responses(401, 404, 409, 413, 415, 422),
    },
)
async def clone_study(
    study_id: StudyId,
    request: Request,
    response: Response,
    store: StoreDep,
    user: CurrentUser,
    key: IdempotencyKey = None,
) -> StudyCreated:
    """Copy a study's spec with changes into a new study owned by the caller (with the new
    spec's `warnings`)."""
    media_type = _media_type(request)
    documents.check_media_type(media_type, what="a clone's changes", yaml_too=False)
    raw = await request.body()  # at most MAX_BODY_BYTES: service.api.limits stops the read
    return await run_in_threadpool(_clone, store, user, study_id, raw, media_type, key, response)


def stage_retry_refusal(study: StudyInfo) -> str:
    """Why a campaign's stage study is not retried alone, and what to do instead."""
    sid, cid = study.id, study.campaign_id
    return (
        f"study {sid} is stage {(study.stage or 0) + 1} of campaign {cid}: a stage is not "
        f"retried alone (its campaign would not know of the new study); act on the campaign "
        f"(`actsearch status --campaign {cid}`, /api/v1/campaigns/{cid}), or clone this "
        f"study (`actsearch clone {sid}`) to run its configurations as a study of its own"
    )


@router.post(
    "/studies/{study_id}/retry",
    response_model=StudyCreated,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": StudyCreated,
            "description": "replayed: this Idempotency-Key's earlier study",
        },
        **error_responses(401, 403, 404, 409, 422),
    },
)
def retry_study(
    study_id: StudyId,
    response: Response,
    store: StoreDep,
    user: CurrentUser,
    key: IdempotencyKey = None,
) -> StudyCreated:
    """Run a failed or cancelled study's spec again as a new study (owner or admin), named
    "<name> (retry)", its description starting "retry of study N". 409 for any other study,
    saying what to do instead: resume a paused one, clone a completed one, confirm again, act
    on the campaign of a campaign's stage study."""
    source = _owned(store, user, study_id)
    if source.campaign_id is not None:
        raise Conflict(stage_retry_refusal(source))
    study, created = store.studies.retry(user, study_id, idempotency_key=key)
    return _created(store, study, created, response)


@router.post(
    "/studies/{study_id}/confirm",
    response_model=StudyPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 404, 409, 422),
)
def confirm_study(
    study_id: StudyId,
    response: Response,
    store: StoreDep,
    user: CurrentUser,
    body: Annotated[ConfirmRequest | None, Body()] = None,
) -> StudyPublic:
    """Create a confirm study (owner or admin): each family's `top` best complete configurations
    and the baseline re-trained with `seeds` fresh seeds, linked both ways (`confirms`,
    `confirmed_by`). Its trainings, on test accuracy, turn the leaderboard's search-time
    "promising" into "better", "worse" or "no evidence" (docs/evidence.md). 409 when the study
    has no complete trial or is itself a confirm study."""
    request = body or ConfirmRequest()
    _owned(store, user, study_id)
    created = create_confirm_study(
        store.studies, user, study_id, top=request.top, seeds=request.seeds
    )
    response.headers["Location"] = f"/api/v1/studies/{created.id}"
    return _public(store, created.id)
