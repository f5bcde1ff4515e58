"""Trials of a study: filtered, sorted, paginated list (in SQL) and one trial in full."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from service.api import etag
from service.api.deps import CurrentUser, StoreDep
from service.api.routes.studies import StudyId
from service.api.schemas import (
    AttemptPublic,
    EpochPublic,
    Page,
    RunStateName,
    TrialDetail,
    TrialPublic,
    error_responses,
)
from service.store.queries import InvalidQuery, ParamRange, list_trials, trial_detail

router = APIRouter(tags=["trials"])

TrialSort = Literal[
    "number", "-number", "value", "-value", "test_acc", "-test_acc", "duration_s", "-duration_s",
    "img_per_s", "-img_per_s", "epochs_done", "-epochs_done", "finished", "-finished",
]  # fmt: skip
FAMILY_PATTERN = r"^[A-Za-z0-9_.-]{1,50}$"
PARAM_PATTERN = r"^[^\x00-\x1f]{1,200}$"
Bound = Annotated[float | None, Query(allow_inf_nan=False)]


def _param_range(text: str) -> ParamRange:
    """A `param` filter; a range whose low is above its high is refused (it matches nothing)."""
    param = ParamRange.parse(text)
    if param.low is not None and param.high is not None and param.low > param.high:
        raise InvalidQuery(
            "query.param", f"{text!r}: the low bound {param.low:g} is above the high {param.high:g}"
        )
    return param


def _check_value_range(value_min: float | None, value_max: float | None) -> None:
    if value_min is not None and value_max is not None and value_min > value_max:
        raise InvalidQuery(
            "query.value_min", f"value_min {value_min:g} is above value_max {value_max:g}"
        )


@router.get(
    "/studies/{study_id}/trials",
    response_model=Page[TrialPublic],
    dependencies=[etag.LIVE],
    responses={**etag.CONDITIONAL, **error_responses(401, 404, 422)},
)
def list_study_trials(
    study_id: StudyId,
    store: StoreDep,
    _user: CurrentUser,
    state: Annotated[list[RunStateName], Query(description="any of these states")] = [],  # noqa: B006
    family: Annotated[
        list[Annotated[str, Query(pattern=FAMILY_PATTERN)]],
        Query(description="any of these activation families"),
    ] = [],  # noqa: B006
    param: Annotated[
        list[Annotated[str, Query(pattern=PARAM_PATTERN)]],
        Query(
            description="NAME:LOW:HIGH on a numeric parameter, e.g. smu.alpha:0.1:0.3 (a bound may be empty)"
        ),
    ] = [],  # noqa: B006
    value_min: Bound = None,
    value_max: Bound = None,
    sort: Annotated[
        TrialSort, Query(description="key, '-' prefix for descending; unfinished last")
    ] = "number",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    cursor: Annotated[
        str | None, Query(max_length=1000, description="next_cursor of the previous page")
    ] = None,
) -> Page[TrialPublic]:
    """A study's trials (one row per attempt), filtered and sorted in SQL, with the total."""
    _check_value_range(value_min, value_max)
    page = list_trials(
        store.db,
        study_id,
        states=state,
        families=family,
        params=[_param_range(p) for p in param],
        value_min=value_min,
        value_max=value_max,
        sort=sort,
        limit=limit,
        offset=offset,
        cursor=cursor,
    )
    return Page[TrialPublic](
        items=[TrialPublic.model_validate(row) for row in page.items],
        total=page.total, limit=page.limit, offset=page.offset, next_cursor=page.next_cursor,
    )  # fmt: skip


def _from_record(record: dict[str, Any] | None, *keys: str) -> dict[str, Any] | None:
    # Written by the worker inside the record; older or failed records may lack them.
    for key in keys:
        value = (record or {}).get(key)
        if isinstance(value, dict):
            return value
    return None


@router.get(
    "/studies/{study_id}/trials/{number}",
    response_model=TrialDetail,
    dependencies=[etag.LIVE],
    responses={**etag.CONDITIONAL, **error_responses(401, 404, 422)},
)
def get_trial(
    study_id: StudyId,
    number: Annotated[int, Path(ge=0, le=2**31 - 1, description="Optuna trial number")],
    store: StoreDep,
    _user: CurrentUser,
) -> TrialDetail:
    """One trial: params, resolved config, per-epoch values, record, learned parameters, retries."""
    view = trial_detail(store.db, study_id, number)
    return TrialDetail(
        **view.row,
        config=view.config,
        epochs=[EpochPublic.model_validate(e) for e in view.epochs],
        record=view.record,
        activation_params=_from_record(view.record, "activation_params"),
        curves=_from_record(view.record, "curves", "activation_curves"),
        log_tail=view.log_tail,
        attempts=[AttemptPublic.model_validate(a) for a in view.attempts],
    )
