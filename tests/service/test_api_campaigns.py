"""Campaigns over the API: submit (JSON/YAML, idempotent), 422s naming fields, list, detail with
funnel and transfer table, cancel / pause / resume / delete by owner or admin."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import yaml

from service.store import Store
from tests.service.campaign_helpers import at_stage, campaign, stage_studies, train_study
from tests.service.conftest import Person

pytestmark = pytest.mark.timeout(300)


def submit(api: httpx.Client, person: Person, body: Any, **headers: str) -> httpx.Response:
    return api.post("/api/v1/campaigns", json=body, headers={**person.headers, **headers})


def _errors(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {error["loc"]: error["msg"] for error in response.json()["detail"]}


def test_submit_creates_the_first_stage_linked_both_ways(api: httpx.Client, alice: Person) -> None:
    response = submit(api, alice, campaign(name="first"))
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "running" and created["stage"] == 0 and created["stages"] == 3
    assert created["stage_ready"] and created["owner"] == alice.name
    assert response.headers["location"] == created["links"]["self"]
    detail = api.get(created["links"]["self"], headers=alice.headers).json()
    assert detail["spec"]["stages"][0]["name"] == "screen" and detail["baseline"] == "relu"
    funnel = detail["funnel"]
    assert [s["name"] for s in funnel] == ["screen", "promote", "confirm"]
    assert [s["state"] for s in funnel] == ["running", "waiting", "waiting"]
    assert funnel[1]["models"] == ["resnet18"]
    assert funnel[2]["models"] == ["resnet18", "mobilenet_v2"]
    assert funnel[0]["kind"] == "search" and funnel[2]["kind"] == "confirm"
    (study,) = funnel[0]["studies"]
    assert study["status"] == "queued" and study["model"] == "lenet"
    assert study["progress"]["budget"] == 14
    linked = api.get(study["self"], headers=alice.headers).json()
    assert linked["campaign_id"] == created["id"] and linked["stage"] == 0
    assert linked["name"] == "first · screen"
    assert detail["transfer"] is None


def test_submit_yaml_and_idempotency_key(client: httpx.Client, alice: Person) -> None:
    key = uuid.uuid4().hex
    headers = {**alice.headers, "Content-Type": "application/yaml", "Idempotency-Key": key}
    body = yaml.safe_dump(campaign(name="from-yaml"))
    first = client.post("/api/v1/campaigns", content=body, headers=headers)
    again = client.post("/api/v1/campaigns", content=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200), first.text
    assert first.json()["id"] == again.json()["id"]
    other = yaml.safe_dump(campaign(name="from-yaml", n_trials=9))
    conflict = client.post("/api/v1/campaigns", content=other, headers=headers)
    assert conflict.status_code == 409 and key in conflict.json()["detail"]


def test_warnings_of_a_stage_are_located_in_it(client: httpx.Client, alice: Person) -> None:
    stages = [
        {"training": {"epochs": 2, "warmup_epochs": 2.0}, "promote": {"top": 1}},
        {"model": "resnet18"},
    ]
    response = submit(client, alice, campaign(stages=stages))
    assert response.status_code == 201, response.text
    locs = [w["loc"] for w in response.json()["warnings"]]
    assert "stages.0.training.warmup_epochs" in locs


def _stages(*stages: dict[str, Any]) -> dict[str, Any]:
    return campaign(stages=list(stages))


INVALID = [
    pytest.param(
        {k: v for k, v in campaign().items() if k != "stages"},
        "stages",
        "POST /api/v1/studies",
        id="a-study-spec",
    ),
    pytest.param(_stages({"model": "lenet"}, {}), "stages.0.promote", "required", id="no-promote"),
    pytest.param(
        _stages({"promote": {"top": 1}}, {"promote": {"top": 1}}),
        "stages.1.promote",
        "the last stage promotes nothing",
        id="promote-on-the-last",
    ),
    pytest.param(
        _stages({"promote": {"top": 1}}, {"n_trials": 5}),
        "stages.1.n_trials",
        "only the first stage takes n_trials",
        id="n-trials-later",
    ),
    pytest.param(
        _stages({"promote": {"top": 0}}, {}), "stages.0.promote.top", "between 1 and 20", id="top"
    ),
    pytest.param(
        _stages({"promote": {"top": 1, "min_delta": 300}}, {}),
        "stages.0.promote.min_delta",
        "between -100 and 100",
        id="min-delta",
    ),
    pytest.param(
        _stages({"modle": "lenet", "promote": {"top": 1}}, {}),
        "stages.0.modle",
        "did you mean 'model'",
        id="misspelt-field",
    ),
    pytest.param(
        _stages({"promote": {"top": 1}}, {"model": ["resnet18", "resnet81"]}),
        "stages.1.model.1.name",
        "resnet81",
        id="transfer-model",
    ),
    pytest.param(
        _stages({"promote": {"top": 1}}, {"model": ["resnet18", "resnet18"]}),
        "stages.1.model.1",
        "listed twice",
        id="model-twice",
    ),
    pytest.param(
        _stages({"training": {"epochs": 0}, "promote": {"top": 1}}, {}),
        "stages.0.training.epochs",
        "outside the domain",
        id="stage-training",
    ),
    pytest.param(
        campaign(activations={"relu": {}, "smu": {"alpha": {"low": 0.5, "high": 0.1}}}),
        "activations.smu.alpha",
        "empty range",
        id="base-field",
    ),
    pytest.param(campaign(stages=[]), "stages", "at least one stage", id="no-stages"),
]


@pytest.mark.parametrize(("body", "loc", "text"), INVALID)
def test_an_invalid_campaign_is_422_naming_the_field(
    client: httpx.Client, alice: Person, body: dict[str, Any], loc: str, text: str
) -> None:
    errors = _errors(submit(client, alice, body))
    assert loc in errors, errors
    assert text in errors[loc], errors


def test_list_filters_by_status_and_owner(client: httpx.Client, alice: Person, bob: Person) -> None:
    mine = submit(client, alice, campaign(name="listed")).json()
    client.post(f"/api/v1/campaigns/{mine['id']}/pause", headers=alice.headers)
    page = client.get(
        "/api/v1/campaigns", params={"status": "paused", "owner": alice.name}, headers=bob.headers
    ).json()
    assert [c["id"] for c in page["items"]] == [mine["id"]] and page["total"] == 1
    running = client.get(
        "/api/v1/campaigns", params={"status": "running", "owner": alice.name}, headers=bob.headers
    ).json()
    assert running["items"] == []


def test_only_the_owner_or_an_admin_changes_a_campaign(
    client: httpx.Client, alice: Person, bob: Person, admin: Person, store: Store
) -> None:
    created = submit(client, alice, campaign()).json()
    base = f"/api/v1/campaigns/{created['id']}"
    assert client.post(f"{base}/pause", headers=bob.headers).status_code == 403
    assert client.delete(base, headers=bob.headers).status_code == 403
    paused = client.post(f"{base}/pause", headers=alice.headers)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    (study,) = stage_studies(store, created["id"], 0)
    assert study.status == "paused"
    assert client.post(f"{base}/pause", headers=alice.headers).status_code == 409
    resumed = client.post(f"{base}/resume", headers=admin.headers)
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    cancelled = client.post(f"{base}/cancel", headers=alice.headers).json()
    assert cancelled["status"] == "cancelled"
    assert stage_studies(store, created["id"], 0)[0].status == "cancelled"
    resume = client.post(f"{base}/resume", headers=alice.headers)
    assert resume.status_code == 409 and "it is cancelled" in resume.json()["detail"]


def test_delete_takes_every_stage_and_a_stage_study_alone_is_409(
    client: httpx.Client, alice: Person, store: Store
) -> None:
    created = submit(client, alice, campaign()).json()
    (study,) = stage_studies(store, created["id"], 0)
    alone = client.delete(f"/api/v1/studies/{study.id}", headers=alice.headers)
    assert alone.status_code == 409 and f"campaigns/{created['id']}" in alone.json()["detail"]
    gone = client.delete(f"/api/v1/campaigns/{created['id']}", headers=alice.headers)
    assert gone.status_code == 204
    assert (
        client.get(f"/api/v1/campaigns/{created['id']}", headers=alice.headers).status_code == 404
    )
    assert client.get(f"/api/v1/studies/{study.id}", headers=alice.headers).status_code == 404
    again = client.delete(f"/api/v1/campaigns/{created['id']}", headers=alice.headers)
    assert again.status_code == 404


def test_the_funnel_and_the_transfer_table_after_the_last_stage(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    created = submit(api, alice, campaign(name="funnel")).json()
    for stage in range(3):
        at_stage(store, created["id"], stage)
        for study in stage_studies(store, created["id"], stage):
            train_study(store, study.id)
    at_stage(store, created["id"], 3)  # past the last: completed
    detail = api.get(created["links"]["self"], headers=alice.headers).json()
    assert detail["status"] == "completed" and detail["stage"] == 2
    screen, promote, confirm = detail["funnel"]
    assert [s["state"] for s in detail["funnel"]] == ["ended"] * 3
    assert screen["left"] == promote["entered"] - 1  # the promoted ones and the baseline
    assert promote["left"] == confirm["entered"] - 1 and confirm["left"] is None
    assert screen["promotion"]["rule"] == {"top": 2, "per": "family", "min_delta": None}
    assert screen["trainings"] >= 14 and confirm["trainings"] == 2 * 3 * confirm["entered"]
    assert all(s["train_s"] >= 0 and s["wall_s"] is not None for s in detail["funnel"])
    table = detail["transfer"]
    assert table["stage"] == 2 and table["models"] == ["resnet18", "mobilenet_v2"]
    assert "smu" in table["families"] and "relu" in table["families"]
    cells = {(c["family"], c["model"]): c["comparison"] for c in table["cells"]}
    for model in ("resnet18", "mobilenet_v2"):
        smu = cells[("smu", model)]
        assert smu["stage"] == "confirm" and smu["metric"] == "test_acc"
        assert smu["trainings"] == 3 and smu["verdict"] == "better"
        assert smu["delta_ci_low"] > 0 and smu["delta"] > 0
        assert cells[("relu", model)]["verdict"] == "baseline"
    # The stage study's own leaderboard says the same.
    study_id = confirm["studies"][0]["id"]
    board = api.get(f"/api/v1/studies/{study_id}/leaderboard", headers=alice.headers).json()
    row = next(r for r in board["rows"] if r["family"] == "smu")
    assert row["confirmation"]["delta"] == pytest.approx(cells[("smu", "resnet18")]["delta"])
    assert row["verdict"] == "better"


def test_unknown_campaign_is_404(client: httpx.Client, alice: Person) -> None:
    for path in ("", "/pause"):
        method = client.get if not path else client.post
        response = method(f"/api/v1/campaigns/999999{path}", headers=alice.headers)
        assert response.status_code == 404


@pytest.mark.parametrize("media", ["json", "yaml"])
def test_a_campaign_posted_as_a_study_is_422_pointing_at_the_campaign_route(
    client: httpx.Client, alice: Person, media: str
) -> None:
    body = campaign(name="misrouted")
    if media == "json":
        response = client.post("/api/v1/studies", json=body, headers=alice.headers)
    else:
        headers = {**alice.headers, "Content-Type": "application/yaml"}
        response = client.post("/api/v1/studies", content=yaml.safe_dump(body), headers=headers)
    errors = _errors(response)
    assert list(errors) == ["stages"], errors  # one error, not one per stage field
    assert "is a campaign" in errors["stages"] and "POST /api/v1/campaigns" in errors["stages"]
    assert "unknown field" not in errors["stages"]


def test_a_stage_study_is_not_retried_alone(
    client: httpx.Client, alice: Person, store: Store
) -> None:
    created = submit(client, alice, campaign(name="no-stage-retry")).json()
    (study,) = stage_studies(store, created["id"], 0)
    client.post(f"/api/v1/studies/{study.id}/cancel", headers=alice.headers)
    response = client.post(f"/api/v1/studies/{study.id}/retry", headers=alice.headers)
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert f"stage 1 of campaign {created['id']}" in detail
    assert f"actsearch status --campaign {created['id']}" in detail
    assert f"actsearch clone {study.id}" in detail
    # Nothing was created: the campaign's studies are the same.
    assert [s.id for s in stage_studies(store, created["id"], 0)] == [study.id]
