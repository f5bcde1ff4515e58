"""Conditional GETs: ETag / If-None-Match → 304 on the routes the dashboard and `--follow` poll.

An unchanged study answers 304 without a body; any change a read shows (a trial finishing, a
study paused, a confirm study's training) changes the tag; a heartbeat changes the tags of the
routes showing live progress only. Every user sees the same answer, and the token is checked
before anything else. SQLite and PostgreSQL, in-process and under uvicorn.
"""

from __future__ import annotations

from typing import Any

import httpx
import optuna
import pytest
from fastapi.testclient import TestClient

from service.store import Store
from tests.service.conftest import Person, add_trial, new_person, spec

pytestmark = pytest.mark.timeout(300)


def fetch(
    api: httpx.Client, person: Person, path: str, tag: str | None = None, **params: Any
) -> httpx.Response:
    headers = dict(person.headers)
    if tag is not None:
        headers["If-None-Match"] = tag
    return api.get(f"/api/v1{path}", params=params, headers=headers)


def tagged(api: httpx.Client, person: Person, path: str, **params: Any) -> str:
    """The ETag of a 200, checked to be a weak tag with the no-cache policy."""
    response = fetch(api, person, path, **params)
    assert response.status_code == 200, response.text
    tag = response.headers["ETag"]
    assert tag.startswith('W/"') and tag.endswith('"')
    assert response.headers["Cache-Control"] == "private, no-cache"
    return tag


def assert_unchanged(
    api: httpx.Client, person: Person, path: str, tag: str, sent: str | None = None, **params: Any
) -> None:
    response = fetch(api, person, path, sent or tag, **params)
    assert response.status_code == 304, f"{path}: {response.status_code} {response.text[:200]}"
    assert response.content == b""
    assert response.headers["ETag"] == tag


def assert_changed(api: httpx.Client, person: Person, path: str, tag: str, **params: Any) -> str:
    response = fetch(api, person, path, tag, **params)
    assert response.status_code == 200, f"{path} answered {response.status_code} after a change"
    assert response.headers["ETag"] != tag
    return str(response.headers["ETag"])


def running_trial(store: Store, study_id: int) -> int:
    claim = store.runs.claim_next("w-etag", [study_id])
    assert claim is not None
    study = optuna.load_study(study_name=claim.optuna_name, storage=store.db.optuna)
    trial = study.ask()
    store.runs.attach_trial(
        claim.run_id, trial_id=trial._trial_id, number=trial.number,
        params={"activation": "relu"}, family="relu", config={"activation": {"family": "relu"}},
    )  # fmt: skip
    return claim.run_id


STUDY_ROUTES = ["", "/leaderboard", "/trials"]


def test_an_unchanged_study_answers_304_until_a_trial_finishes(
    api: httpx.Client, store: Store
) -> None:
    owner = new_person(store, "etag")
    study, _ = store.studies.create(owner.info, spec(n_trials=6))
    add_trial(store, study.id, value=0.7)
    base = f"/studies/{study.id}"
    tags = {route: tagged(api, owner, base + route) for route in STUDY_ROUTES}
    for route, tag in tags.items():
        assert_unchanged(api, owner, base + route, tag)
        assert_unchanged(api, owner, base + route, tag, f'"x", {tag}')  # one of a list
        assert_unchanged(api, owner, base + route, tag, tag.removeprefix("W/"))  # weak match
    other = new_person(store, "etag-reader")  # every user sees the same answer
    assert_unchanged(api, other, base, tags[""])

    add_trial(store, study.id, value=0.9)
    for route, tag in tags.items():
        assert_changed(api, owner, base + route, tag)


def test_a_heartbeat_changes_only_what_shows_live_progress(api: httpx.Client, store: Store) -> None:
    owner = new_person(store, "etag")
    study, _ = store.studies.create(owner.info, spec(n_trials=3))
    run_id = running_trial(store, study.id)
    store.workers.register("w-etag", hostname="h", pid=1, device="cpu")
    base = f"/studies/{study.id}"
    detail, board = tagged(api, owner, base), tagged(api, owner, base + "/leaderboard")
    trials = tagged(api, owner, base + "/trials")
    trial = tagged(api, owner, f"{base}/trials/0")

    store.workers.heartbeat("w-etag", run_id, {"phase": "training", "step": 3, "steps": 9})
    assert_unchanged(api, owner, base, detail)
    assert_unchanged(api, owner, base + "/leaderboard", board)
    assert_changed(api, owner, base + "/trials", trials)
    assert_changed(api, owner, f"{base}/trials/0", trial)
    shown = fetch(api, owner, base + "/trials").json()["items"][0]["progress"]
    assert shown["step"] == 3  # the new progress, not a kept answer of the old tag


def test_the_study_list_changes_with_any_study(api: httpx.Client, store: Store) -> None:
    owner = new_person(store, "etag")
    tag = tagged(api, owner, "/studies", limit=5)
    assert_unchanged(api, owner, "/studies", tag, limit=5)
    study, _ = store.studies.create(owner.info, spec(n_trials=2))
    tag = assert_changed(api, owner, "/studies", tag, limit=5)
    store.studies.transition(study.id, "pause")
    assert_changed(api, owner, "/studies", tag, limit=5)


def test_a_confirm_study_changes_its_source_leaderboard(api: httpx.Client, store: Store) -> None:
    owner = new_person(store, "etag")
    source, _ = store.studies.create(owner.info, spec(n_trials=3))
    add_trial(store, source.id, value=0.7)
    base = f"/studies/{source.id}"
    detail, board = tagged(api, owner, base), tagged(api, owner, base + "/leaderboard")
    made = api.post(f"/api/v1{base}/confirm", json={"top": 1, "seeds": 2}, headers=owner.headers)
    assert made.status_code == 201, made.text
    assert_changed(api, owner, base, detail)  # names its confirm study
    board = assert_changed(api, owner, base + "/leaderboard", board)
    confirm_id = made.json()["id"]
    add_trial(store, confirm_id, value=0.71)  # a training of the confirm study
    assert_changed(api, owner, base + "/leaderboard", board)


def test_tags_are_checked_after_the_token_and_never_for_a_missing_study(
    api: httpx.Client, store: Store
) -> None:
    owner = new_person(store, "etag")
    study, _ = store.studies.create(owner.info, spec(n_trials=2))
    tag = tagged(api, owner, f"/studies/{study.id}")
    anonymous = api.get(f"/api/v1/studies/{study.id}", headers={"If-None-Match": tag})
    assert anonymous.status_code == 401
    assert fetch(api, owner, "/studies/999999", "*").status_code == 404
    assert fetch(api, owner, f"/studies/{study.id}", "*").status_code == 304  # any version


def test_a_kept_answer_is_the_answer(api: httpx.Client, store: Store) -> None:
    """A second request without a tag gets the answer kept under the current tag: the same
    bytes, the same headers a fresh one has (the request id its own)."""
    owner = new_person(store, "etag")
    study, _ = store.studies.create(owner.info, spec(n_trials=2))
    add_trial(store, study.id, value=0.6)
    path = f"/studies/{study.id}/leaderboard"
    first, second = fetch(api, owner, path), fetch(api, owner, path)
    assert first.content == second.content and first.status_code == second.status_code == 200
    for header in ("ETag", "Content-Type", "Cache-Control", "Content-Security-Policy"):
        assert first.headers[header] == second.headers[header]
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    csv = fetch(api, owner, path, format="csv")  # another query: another answer
    assert csv.headers["Content-Type"].startswith("text/csv") and csv.text.startswith("family,")


def test_the_dashboards_session_cookie_polls_as_a_token_does(
    client: TestClient, store: Store
) -> None:
    """The dashboard polls with its session cookie: 304 while unchanged, the kept answer to a
    second page. A forged cookie, or a token that is not a bearer one, gets no answer (401) and
    not even a 404 for a missing study: nothing is read before the caller is known."""
    owner = new_person(store, "cookie")
    study, _ = store.studies.create(owner.info, spec(n_trials=2))
    add_trial(store, study.id, value=0.6)
    sessions = client.app.state.sessions  # type: ignore[attr-defined]
    cookie = {"Cookie": f"actsearch_session={sessions.cookie_for(owner.token)}"}
    path = f"/dashboard/data/studies/{study.id}/summary"
    first = client.get(path, headers=cookie)
    assert first.status_code == 200, first.text
    again = client.get(path, headers={**cookie, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    kept = client.get(path, headers={**cookie, "Authorization": "Basic eDp5"})  # cookie still used
    assert kept.status_code == 200 and kept.content == first.content
    forged = {"Cookie": f"actsearch_session={owner.token}.{'0' * 64}"}
    assert client.get(path, headers=forged).status_code == 401
    assert client.get("/dashboard/data/studies/999999/summary", headers=forged).status_code == 401
    malformed = {"Cookie": 'actsearch_session="unterminated', "If-None-Match": "*"}
    assert client.get(path, headers=malformed).status_code == 401


def test_a_poll_with_a_path_that_is_not_an_id_gets_the_routes_own_answer(
    client: TestClient, store: Store
) -> None:
    owner = new_person(store, "not-an-id")
    for path in (
        "/api/v1/studies/abc",
        "/api/v1/studies/0/leaderboard",
        "/api/v1/studies/99999999999",
    ):
        response = client.get(path, headers={**owner.headers, "If-None-Match": "*"})
        assert response.status_code == 422, (path, response.status_code)
        assert response.json()["detail"], path


def test_a_poll_is_validated_as_the_route_validates_it(api: httpx.Client, store: Store) -> None:
    """Answered before routing or not, a poll is refused as the route refuses it: an
    If-None-Match over 2,000 characters, or a query the route rejects, is a 422 even when an
    answer is kept and `*` matches every tag; a first poll holding the current tag gets a 304."""
    owner = new_person(store, "validated")
    study, _ = store.studies.create(owner.info, spec(n_trials=2))
    tagged(api, owner, f"/studies/{study.id}")  # an answer kept for the route
    too_long = fetch(api, owner, f"/studies/{study.id}", "W/" + '"' + "x" * 2001 + '"')
    assert too_long.status_code == 422, too_long.text
    assert fetch(api, owner, "/studies", "*", limit=100_000).status_code == 422
    first = fetch(api, owner, "/studies", tag="*", limit=7)  # never asked before: the route runs
    assert first.status_code == 304 and first.content == b"" and first.headers["ETag"]
    assert fetch(api, owner, "/studies", tag="*", limit=7).status_code == 304
