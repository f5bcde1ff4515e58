"""Access control route by route: 401 without a token, 403 on others' studies, hashed tokens."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select

from service.db import Token
from service.store import Store
from tests.service.conftest import Person, spec

pytestmark = pytest.mark.timeout(300)

OPEN_ROUTES = {"/api/v1/health", "/api/v1/ready", "/api/v1/openapi.json", "/api/v1/docs"}
# Study actions only the owner or an admin may take (clone makes the caller's own copy).
OWNER_ONLY = {"cancel", "pause", "resume", "retry", "confirm", "DELETE"}


def api_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every API route."""
    found = []
    # FastAPI keeps included routers nested; iter_route_contexts flattens app.routes.
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and (route.path or "").startswith("/api/v1"):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                found.append((method, str(route.path)))
    return found


def fill(path: str, value: int) -> str:
    return re.sub(r"\{[^}]+\}", str(value), path)


def test_every_route_needs_a_token(
    app: Any, client: httpx.Client, alice: Person, store: Store
) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    routes = api_routes(app)
    assert len(routes) >= 20
    checked = 0
    for method, path in routes:
        if path in OPEN_ROUTES:
            continue
        url = fill(path, study_id if "{study_id}" in path else 1)
        for headers in (
            {},
            {"Authorization": "Bearer as_not-a-real-token"},
            {"Authorization": "Basic eDp5"},
        ):
            response = client.request(method, url, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "token" in response.json()["detail"]
        checked += 1
    assert checked == len(routes) - len(OPEN_ROUTES & {p for _, p in routes})
    assert store.studies.get(study_id).status == "queued"  # nothing happened without a token


def test_health_and_ready_need_no_token(api: httpx.Client) -> None:
    assert api.get("/api/v1/health").json()["status"] == "ok"
    assert api.get("/api/v1/ready").json()["status"] == "ready"


def test_another_users_study_is_403_on_every_mutating_route(
    app: Any, api: httpx.Client, alice: Person, bob: Person, store: Store
) -> None:
    study_id = api.post("/api/v1/studies", json=spec(), headers=alice.headers).json()["id"]
    mutating = [
        (method, path) for method, path in api_routes(app)
        if path.startswith("/api/v1/studies/{study_id}")
        and (method == "DELETE" or path.rsplit("/", 1)[-1] in OWNER_ONLY)
    ]  # fmt: skip
    assert {(m, p.rsplit("/", 1)[-1]) for m, p in mutating} == {
        ("POST", "cancel"), ("POST", "pause"), ("POST", "resume"), ("POST", "retry"),
        ("POST", "confirm"), ("DELETE", "{study_id}"),
    }  # fmt: skip
    for method, path in mutating:
        response = api.request(method, fill(path, study_id), headers=bob.headers)
        assert response.status_code == 403, (method, path, response.text)
        assert alice.name in response.json()["detail"]
    assert store.studies.get(study_id).status == "queued"
    # Reading stays open to everyone, and so does cloning into one's own study.
    assert api.get(f"/api/v1/studies/{study_id}", headers=bob.headers).status_code == 200
    clone = api.post(f"/api/v1/studies/{study_id}/clone", json={}, headers=bob.headers)
    assert clone.status_code == 201 and clone.json()["owner"] == bob.name


def test_admin_routes_are_403_for_ordinary_users(
    client: httpx.Client, alice: Person, bob: Person
) -> None:
    for method, url, body in [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"name": "mallory"}),
        ("POST", f"/api/v1/users/{alice.info.id}/tokens", {"label": "x"}),
        ("GET", f"/api/v1/users/{bob.info.id}/tokens", None),
    ]:
        response = client.request(method, url, headers=alice.headers, json=body)
        assert response.status_code == 403, (method, url, response.text)


def test_users_and_tokens_lifecycle(api: httpx.Client, admin: Person) -> None:
    name = f"carol-{id(api) % 100000}"
    created = api.post("/api/v1/users", json={"name": name}, headers=admin.headers)
    assert created.status_code == 201, created.text
    carol = created.json()
    token = carol["token"]
    carol_headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/me", headers=carol_headers).json()["name"] == name
    assert name in [u["name"] for u in api.get("/api/v1/users", headers=admin.headers).json()]
    assert api.post("/api/v1/users", json={"name": name}, headers=admin.headers).status_code == 409

    issued = api.post(
        f"/api/v1/users/{carol['user']['id']}/tokens", json={"label": "ci"}, headers=admin.headers
    )
    assert issued.status_code == 201
    second = issued.json()
    assert second["label"] == "ci" and second["token"].startswith(second["prefix"])
    listed = api.get(f"/api/v1/users/{carol['user']['id']}/tokens", headers=carol_headers).json()
    assert {t["label"] for t in listed} == {"initial", "ci"}
    assert all("token" not in t for t in listed)  # shown once, never listed

    # Carol revokes her own second token; it stops working at once, the first still works.
    assert api.delete(f"/api/v1/tokens/{second['id']}", headers=carol_headers).status_code == 204
    assert (
        api.get("/api/v1/me", headers={"Authorization": f"Bearer {second['token']}"}).status_code
        == 401
    )
    assert api.get("/api/v1/me", headers=carol_headers).status_code == 200
    assert api.delete("/api/v1/tokens/99999999", headers=admin.headers).status_code == 404


def test_user_cannot_revoke_someone_elses_token(
    client: httpx.Client, alice: Person, bob: Person, store: Store
) -> None:
    bobs = store.users.tokens(bob.info.id)[0]
    assert client.delete(f"/api/v1/tokens/{bobs.id}", headers=alice.headers).status_code == 403
    assert client.get("/api/v1/me", headers=bob.headers).status_code == 200


def test_bad_user_bodies_are_422(client: httpx.Client, admin: Person) -> None:
    for body in (
        {"name": ""},
        {"name": "has space"},
        {"name": "x", "extra": 1},
        {},
        {"name": "y", "is_admin": 0},
    ):
        response = client.post("/api/v1/users", json=body, headers=admin.headers)
        assert response.status_code == 422, body
        assert all(e["loc"].startswith("body") for e in response.json()["detail"])


def test_tokens_are_stored_only_as_digests(
    db_url: str, store: Store, client: httpx.Client, admin: Person
) -> None:
    made = client.post(
        "/api/v1/users", json={"name": f"dave-{admin.info.id}"}, headers=admin.headers
    ).json()
    token = made["token"]
    with store.db.session() as session:
        rows = session.scalars(select(Token).where(Token.user_id == made["user"]["id"])).all()
        stored = [(r.digest, r.prefix, r.label) for r in rows]
    assert stored and stored[0][0] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in value for row in stored for value in row)
    assert len(stored[0][1]) < len(token) / 3  # a prefix to recognise it, not the secret
    if db_url.startswith("sqlite"):
        database = Path(db_url.removeprefix("sqlite:///"))
        for path in (database, database.with_name(database.name + "-wal")):
            if path.exists():
                assert token.encode() not in path.read_bytes(), f"token in clear in {path}"
