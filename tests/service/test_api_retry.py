"""Retry of a failed or cancelled study, resume's hint, and the spec warnings of submit, clone and
retry (SQLite and PostgreSQL, the app in-process and under uvicorn)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update

from service.db import Study
from service.store import Store
from tests.service.conftest import Person, add_trial, spec

pytestmark = pytest.mark.timeout(300)

# The case: the proxy recipe's warm-up (2.3 epochs) and lookahead (from epoch 3) with one
# epoch: valid, but the learning rate never peaks and the lookahead never runs.
PROXY_ONE_EPOCH = spec(name="proxy-1", model="proxy", training={"epochs": 1})
# Longer than the generic warm-up (1 epoch): nothing to warn of.
QUIET = spec(training={"epochs": 2})


def submit(api: httpx.Client, person: Person, body: dict | None = None) -> dict:
    response = api.post("/api/v1/studies", json=body or spec(), headers=person.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def set_status(store: Store, study_id: int, status: str) -> None:
    with store.db.session() as session:
        session.execute(update(Study).where(Study.id == study_id).values(status=status))


# -- retry -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_retry_of_a_failed_or_cancelled_study_is_a_new_study_with_its_spec(
    api: httpx.Client, alice: Person, store: Store, how: str
) -> None:
    source = submit(api, alice, {**QUIET, "name": "flaky", "description": "relu vs smu"})
    if how == "failed":
        store.studies.fail(source["id"], "no machine can run it")
    else:
        api.post(f"/api/v1/studies/{source['id']}/cancel", headers=alice.headers)

    response = api.post(f"/api/v1/studies/{source['id']}/retry", headers=alice.headers)
    assert response.status_code == 201, response.text
    retry = response.json()
    assert retry["id"] != source["id"] and retry["status"] == "queued"
    assert retry["name"] == "flaky (retry)"
    assert retry["description"] == f"retry of study {source['id']}: relu vs smu"
    assert retry["owner"] == alice.name and retry["warnings"] == []
    assert response.headers["location"] == f"/api/v1/studies/{retry['id']}"
    old, new = store.studies.get(source["id"]).spec, store.studies.get(retry["id"]).spec
    assert {**new, "name": old["name"], "description": old["description"]} == old
    assert store.studies.get(source["id"]).status == how  # the source is left as it was

    # A retry of the retry keeps one suffix.
    store.studies.fail(retry["id"], "again")
    again = api.post(f"/api/v1/studies/{retry['id']}/retry", headers=alice.headers).json()
    assert again["name"] == "flaky (retry)"
    assert again["description"].startswith(f"retry of study {retry['id']}: retry of study")


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        ("queued", "only a failed or cancelled study is retried"),
        ("running", "only a failed or cancelled study is retried"),
        ("paused", "resume it (`actsearch resume"),
        ("completed", "clone it (`actsearch clone"),
    ],
)
def test_retry_of_a_study_that_is_not_over_or_completed_is_409_saying_what_to_do(
    api: httpx.Client, alice: Person, store: Store, status: str, hint: str
) -> None:
    study_id = submit(api, alice)["id"]
    set_status(store, study_id, status)
    response = api.post(f"/api/v1/studies/{study_id}/retry", headers=alice.headers)
    assert response.status_code == 409, response.text
    assert hint in response.json()["detail"]
    assert f"study {study_id}" in response.json()["detail"]


def test_retry_of_a_confirm_study_says_to_confirm_again(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    source = submit(api, alice, spec(n_trials=4))["id"]
    add_trial(store, source, family="relu", value=0.8)
    confirm = api.post(f"/api/v1/studies/{source}/confirm", headers=alice.headers).json()
    store.studies.fail(confirm["id"], "lost")
    response = api.post(f"/api/v1/studies/{confirm['id']}/retry", headers=alice.headers)
    assert response.status_code == 409
    assert f"`actsearch confirm {source}`" in response.json()["detail"]


def test_retry_of_an_unknown_study_is_404(api: httpx.Client, alice: Person) -> None:
    assert api.post("/api/v1/studies/999999/retry", headers=alice.headers).status_code == 404


def test_resume_of_a_failed_study_is_409_naming_retry(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    study_id = submit(api, alice)["id"]
    store.studies.fail(study_id, "diverged everywhere")
    response = api.post(f"/api/v1/studies/{study_id}/resume", headers=alice.headers)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert f"it is failed; a failed study does not resume: `actsearch retry {study_id}`" in detail
    assert f"/api/v1/studies/{study_id}/retry" in detail
    set_status(store, study_id, "completed")
    completed = api.post(f"/api/v1/studies/{study_id}/resume", headers=alice.headers)
    assert f"`actsearch clone {study_id}`" in completed.json()["detail"]


# -- warnings --------------------------------------------------------------------------------
def test_submit_answers_with_the_specs_warnings(api: httpx.Client, alice: Person) -> None:
    created = submit(api, alice, PROXY_ONE_EPOCH)
    warnings = {w["loc"]: w["msg"] for w in created["warnings"]}
    assert set(warnings) == {"training.warmup_epochs", "training.lookahead.start_epoch"}
    assert "never reaches its peak" in warnings["training.warmup_epochs"]
    assert submit(api, alice, QUIET)["warnings"] == []
    # Listing and detail are unchanged: warnings belong to the creation's answer.
    listed = api.get(f"/api/v1/studies/{created['id']}", headers=alice.headers).json()
    assert "warnings" not in listed


def test_yaml_submit_and_idempotent_replay_carry_the_warnings(
    api: httpx.Client, alice: Person
) -> None:
    body = "name: y\nmodel: proxy\ntraining: {epochs: 1}\nactivations: {relu: {}}\n"
    headers = {**alice.headers, "Content-Type": "application/yaml", "Idempotency-Key": "warn-1"}
    first = api.post("/api/v1/studies", content=body, headers=headers)
    replay = api.post("/api/v1/studies", content=body, headers=headers)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert first.json()["warnings"] == replay.json()["warnings"] != []


def test_clone_and_retry_answer_with_the_new_specs_warnings(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    source = submit(api, alice, spec(name="proxy-10", model="proxy", training={"epochs": 10}))
    assert source["warnings"] == []
    clone = api.post(
        f"/api/v1/studies/{source['id']}/clone",
        json={"training": {"epochs": 2}},
        headers=alice.headers,
    ).json()
    # The stored source states the recipe's warm-up (2.3) and lookahead (epoch 3): 2 epochs
    # contradict both.
    assert {w["loc"] for w in clone["warnings"]} == {
        "training.warmup_epochs",
        "training.lookahead.start_epoch",
    }
    store.studies.fail(clone["id"], "lost")
    retry = api.post(f"/api/v1/studies/{clone['id']}/retry", headers=alice.headers).json()
    assert retry["warnings"] == clone["warnings"]


def test_the_generic_warmup_with_one_epoch_is_a_warning_too(
    api: httpx.Client, alice: Person
) -> None:
    # The generic default warm-up is 1 epoch: a 1-epoch study is all warm-up, never decays.
    [warning] = submit(api, alice, spec(training={"epochs": 1}))["warnings"]
    assert warning["msg"].startswith("warmup_epochs (1) is not below epochs (1)")
