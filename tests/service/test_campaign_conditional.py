"""A campaign's detail is a conditional GET, as the study routes the dashboard polls: an unchanged
campaign answers 304 without a body; a trial of a stage finishing, a pause, the next stage's
set-up change its tag. SQLite and PostgreSQL, in-process and under uvicorn."""

from __future__ import annotations

import time

import httpx
import pytest

from service.api.etag import WALL_CLOCK_S
from service.store import Store
from tests.service.campaign_helpers import (
    at_stage,
    campaign,
    stage_studies,
    train_study,
    train_trial,
)
from tests.service.conftest import Person
from tests.service.test_api_conditional import assert_changed, assert_unchanged, fetch, tagged

pytestmark = pytest.mark.timeout(300)


def unchanged_tag(api: httpx.Client, person: Person, path: str) -> str:
    """A tag that a second GET finds current (a running campaign's tag also turns over every
    WALL_CLOCK_S: a GET on each side of that moment is taken again)."""
    for _ in range(3):
        clock = int(time.time() // WALL_CLOCK_S)
        tag = tagged(api, person, path)
        again = fetch(api, person, path, tag)
        if again.status_code == 304 or int(time.time() // WALL_CLOCK_S) == clock:
            assert_unchanged(api, person, path, tag)
            return tag
    raise AssertionError(f"{path}: no stable tag")


def test_a_campaigns_detail_is_conditional(api: httpx.Client, alice: Person, store: Store) -> None:
    created = api.post("/api/v1/campaigns", json=campaign(name="etag"), headers=alice.headers)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    path = f"/campaigns/{campaign_id}"
    (screen,) = stage_studies(store, campaign_id, 0)

    tag = unchanged_tag(api, alice, path)
    assert train_trial(store, screen.id)  # a trial of the stage finished: the funnel changed
    tag = assert_changed(api, alice, path, tag)
    body = fetch(api, alice, path).json()
    assert body["funnel"][0]["trainings"] == 1

    paused = api.post(f"/api/v1{path}/pause", headers=alice.headers)
    assert paused.status_code == 200, paused.text
    tag = assert_changed(api, alice, path, tag)
    assert_unchanged(api, alice, path, tag)  # paused: no clock in its tag
    assert fetch(api, alice, path).json()["status"] == "paused"

    resumed = api.post(f"/api/v1{path}/resume", headers=alice.headers)
    assert resumed.status_code == 200, resumed.text
    tag = assert_changed(api, alice, path, tag)
    train_study(store, screen.id)
    at_stage(store, campaign_id, 1)  # the next stage: new studies, the promotion recorded
    assert_changed(api, alice, path, tag)
    funnel = fetch(api, alice, path).json()["funnel"]
    assert funnel[0]["state"] == "ended" and funnel[1]["studies"]
    assert fetch(api, alice, "/campaigns/999999", tag).status_code == 404
