"""Campaigns: submit (JSON or YAML, idempotent), list, detail (funnel and transfer table),
cancel / pause / resume and delete of the whole campaign (docs/campaigns.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from search_space.spec import MAX_STAGES, campaign_warnings, parse_campaign
from service.api import documents, etag
from service.api.deps import CurrentUser, StoreDep
from service.api.routes.studies import NAME_PATTERN, IdempotencyKey, decode_spec
from service.api.schemas import (
    CampaignCreated,
    CampaignDetail,
    CampaignPublic,
    FieldError,
    Page,
    error_responses,
)
from service.api.views import campaign_detail, campaign_public
from service.db import CampaignStatus
from service.store import CampaignInfo, UserInfo
from service.store.queries.campaigns import campaign_view

router = APIRouter(tags=["campaigns"])

CampaignId = Annotated[int, Path(ge=1, le=2**31 - 1, description="campaign id")]
if TYPE_CHECKING:
    CampaignStatusName = str
else:  # the statuses inline in the OpenAPI document, spelled out only in service.db.states
    CampaignStatusName = Literal[tuple(s.value for s in CampaignStatus)]

CAMPAIGN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the campaign: a study spec's fields (the base: dataset, activations, "
        "baselines, sampler, …; see StudySpec) plus `stages`, as a JSON object or as YAML text "
        "(docs/campaigns.md)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["name", "activations", "stages"],
                    "properties": {
                        "stages": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_STAGES,
                            "items": {"type": "object"},
                            "description": "each a study template (model, training, seeds; "
                            "the first also n_trials, sampler) and, but the last, a promote "
                            "rule {top, per, min_delta}",
                        }
                    },
                }
            },
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _submit(
    store: StoreDep,
    user: UserInfo,
    raw: bytes,
    media_type: str,
    key: str | None,
    response: Response,
) -> CampaignCreated:
    document = decode_spec(raw, media_type)
    info, created = store.campaigns.create(user, document, idempotency_key=key)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/api/v1/campaigns/{info.id}"
    warnings = campaign_warnings(parse_campaign(info.spec))
    return CampaignCreated(
        **campaign_public(info).model_dump(), warnings=[FieldError(**w) for w in warnings]
    )


@router.post(
    "/campaigns",
    response_model=CampaignCreated,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=CAMPAIGN_BODY,
    responses={
        200: {
            "model": CampaignCreated,
            "description": "replayed: this Idempotency-Key's earlier campaign",
        },
        **error_responses(401, 409, 413, 415, 422),
    },
)
async def create_campaign(
    request: Request,
    response: Response,
    store: StoreDep,
    user: CurrentUser,
    key: IdempotencyKey = None,
) -> CampaignCreated:
    """Submit a campaign (JSON object or YAML text): its first stage's studies are created at
    once, each later stage's when the one before it ends, seeded with its promoted
    configurations. 201 with the campaign and its stages' `warnings`."""
    media_type = _media_type(request)
    documents.check_media_type(media_type, what="the campaign", yaml_too=True)
    raw = await request.body()  # at most MAX_BODY_BYTES: service.api.limits stops the read
    return await run_in_threadpool(_submit, store, user, raw, media_type, key, response)


@router.get("/campaigns", response_model=Page[CampaignPublic], responses=error_responses(401, 422))
def list_campaigns(
    store: StoreDep,
    _user: CurrentUser,
    status_: Annotated[
        list[CampaignStatusName], Query(alias="status", description="any of these statuses")
    ] = [],  # noqa: B006
    owner: Annotated[str | None, Query(max_length=100, pattern=NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Page[CampaignPublic]:
    """Campaigns, newest first, one page at a time (all users see all campaigns)."""
    items, total = store.campaigns.list_all(
        statuses=status_, owner=owner, limit=limit, offset=offset
    )
    return Page[CampaignPublic](
        items=[campaign_public(info) for info in items],
        total=total,
        limit=limit,
        offset=offset,
        next_cursor=None,  # offsets only: campaigns are few
    )


@router.get(
    "/campaigns/{campaign_id}",
    response_model=CampaignDetail,
    dependencies=[etag.CAMPAIGN],
    responses={**etag.CONDITIONAL, **error_responses(401, 404, 422)},
)
def get_campaign(campaign_id: CampaignId, store: StoreDep, _user: CurrentUser) -> CampaignDetail:
    """A campaign: its document, each stage's studies, the funnel (configurations in and out,
    trainings, time, verdicts) and the family × model transfer table."""
    return campaign_detail(campaign_view(store.db, campaign_id))


def _owned(store: StoreDep, user: UserInfo, campaign_id: int) -> CampaignInfo:
    info = store.campaigns.get(campaign_id)
    if not (user.is_admin or info.owner_id == user.id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"campaign {campaign_id} belongs to {info.owner}; only its owner or an "
            "admin may change it",
        )
    return info


def _transition(store: StoreDep, user: UserInfo, campaign_id: int, action: str) -> CampaignPublic:
    _owned(store, user, campaign_id)
    return campaign_public(store.campaigns.transition(campaign_id, action))


MUTATE_ERRORS = error_responses(401, 403, 404, 409, 422)


@router.post(
    "/campaigns/{campaign_id}/cancel", response_model=CampaignPublic, responses=MUTATE_ERRORS
)
def cancel_campaign(campaign_id: CampaignId, store: StoreDep, user: CurrentUser) -> CampaignPublic:
    """Cancel the campaign and its studies: no further stage (owner or admin)."""
    return _transition(store, user, campaign_id, "cancel")


@router.post(
    "/campaigns/{campaign_id}/pause", response_model=CampaignPublic, responses=MUTATE_ERRORS
)
def pause_campaign(campaign_id: CampaignId, store: StoreDep, user: CurrentUser) -> CampaignPublic:
    """Pause the current stage's studies; no stage moves on until resumed (owner or admin)."""
    return _transition(store, user, campaign_id, "pause")


@router.post(
    "/campaigns/{campaign_id}/resume", response_model=CampaignPublic, responses=MUTATE_ERRORS
)
def resume_campaign(campaign_id: CampaignId, store: StoreDep, user: CurrentUser) -> CampaignPublic:
    """Resume a paused campaign: its current stage's studies run again (owner or admin)."""
    return _transition(store, user, campaign_id, "resume")


@router.delete(
    "/campaigns/{campaign_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
def delete_campaign(campaign_id: CampaignId, store: StoreDep, user: CurrentUser) -> Response:
    """Delete a campaign with every stage's studies, trials and Optuna studies (owner or admin)."""
    _owned(store, user, campaign_id)
    store.campaigns.delete(campaign_id, store.studies)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
