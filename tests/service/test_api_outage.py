"""A database outage is a 503 with Retry-After on every route; a database bug stays a 500.

PostgreSQL is made unreachable under a running in-process app by a TCP proxy that the app's
engine goes through (service/db_proxy.py): stopping it refuses and cuts the app's connections
while the server itself stays up for everyone else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import text

from service import migrate
from service.app import create_app
from service.db import make_engine
from service.settings import Settings
from service.store import Store
from tests.service.conftest import (
    add_trial,
    create_pg_database,
    drop_pg_database,
    new_person,
    spec,
)
from tests.service.db_proxy import TcpProxy

pytestmark = pytest.mark.timeout(300)

DB_FREE = {"/api/v1/health"}  # answers without the database


@dataclass
class Outage:
    """A running app whose database can be taken away, with an admin, a study and a trial."""

    client: TestClient
    proxy: TcpProxy
    token: str
    study_id: int

    @property
    def headers(self) -> dict[str, str]:
        """The admin's Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    """The app on a fresh PostgreSQL database reached through a proxy (started)."""
    url = create_pg_database()
    proxy = TcpProxy()
    proxy.start()
    store: Store | None = None
    try:
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        store = Store.open(proxy.url(url.rsplit("/", 1)[1]))
        admin = new_person(store, "admin", admin=True)
        study_id = store.studies.create(admin.info, spec(name="outage"))[0].id
        add_trial(store, study_id, family="relu", value=0.5)
        settings = Settings(database_url=url, home=tmp_path, session_secret="s" * 32)
        app = create_app(settings, store, reap_interval_s=None)
        with TestClient(app, raise_server_exceptions=False) as client:
            # As a link opened from outside the browser: it signs in at once.
            signed_in = client.get(
                f"/login?token={admin.token}",
                headers={"Sec-Fetch-Site": "none"},
                follow_redirects=False,
            )
            assert signed_in.status_code == 303  # the dashboard's session cookie is set
            yield Outage(client, proxy, admin.token, study_id)
    finally:
        proxy.stop()
        if store is not None:
            store.dispose()
        drop_pg_database(url)


def api_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every API route."""
    found = []
    for route in iter_route_contexts(app.routes):  # flattens the included routers
        if isinstance(route.original_route, APIRoute) and (route.path or "").startswith("/api/v1"):
            methods = sorted((route.methods or set()) - {"HEAD"})
            found += [(method, str(route.path)) for method in methods]
    return found


def fill(path: str, study_id: int) -> str:
    return re.sub(r"\{[^}]+\}", str(study_id), path).replace(f"/trials/{study_id}", "/trials/0")


def assert_unavailable(response: Any, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text[:300])
    assert int(response.headers["retry-after"]) > 0, what


@pytest.mark.postgres
def test_every_route_answers_503_with_retry_after_while_the_database_is_away(
    outage: Outage,
) -> None:
    client = outage.client
    routes = api_routes(client.app)
    assert len(routes) > 15
    assert client.get("/api/v1/studies", headers=outage.headers).status_code == 200
    outage.proxy.stop()

    for method, path in routes:
        url = fill(path, outage.study_id)
        response = client.request(method, url, headers=outage.headers, json={})
        if path in DB_FREE:
            assert response.status_code == 200, url
            continue
        assert_unavailable(response, f"{method} {url}")
        body = response.json()
        assert "database is unreachable" in body["detail"] and "retry" in body["detail"]
        assert body["request_id"] == response.headers["x-request-id"]
    # Without a token too: the token check is what needs the database.
    assert_unavailable(client.get("/api/v1/studies", headers={"Authorization": "Bearer x"}), "x")

    data = client.get(f"/dashboard/data/studies/{outage.study_id}/summary")
    assert_unavailable(data, "dashboard data")
    assert "database is unreachable" in data.json()["detail"]
    for page in ("/", f"/studies/{outage.study_id}", "/workers", f"/login?token={outage.token}"):
        response = client.get(page, follow_redirects=False)
        assert_unavailable(response, page)
        assert response.headers["content-type"].startswith("text/html")
        assert "Database unreachable" in response.text and "retry in" in response.text

    outage.proxy.start()  # the database is back: so is every answer
    assert client.get("/api/v1/studies", headers=outage.headers).status_code == 200
    assert client.get("/api/v1/ready").status_code == 200
    assert client.get("/").status_code == 200


def test_a_missing_table_is_a_500_and_makes_ready_503(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store.open(url)
    try:
        admin = new_person(store, "admin", admin=True)
        settings = Settings(database_url=url, home=tmp_path, session_secret="s" * 32)
        app = create_app(settings, store, reap_interval_s=None)
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/api/v1/ready").status_code == 200
            with engine.begin() as connection:
                connection.execute(text("DROP TABLE as_workers"))
            ready = client.get("/api/v1/ready")
            assert ready.status_code == 503
            assert "as_workers" in ready.json()["detail"] and "retry-after" not in ready.headers
            broken = client.get("/api/v1/workers", headers=admin.headers)
            assert broken.status_code == 500  # a bug to report, not an outage to wait out
            assert "internal error" in broken.json()["detail"]
            assert "retry-after" not in broken.headers
    finally:
        store.dispose()
        engine.dispose()


def test_the_openapi_document_lists_503_where_a_token_is_needed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    settings = Settings(database_url=url, home=tmp_path, session_secret="s" * 32)
    with TestClient(create_app(settings, reap_interval_s=None)) as client:
        paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if "401" in responses:
                assert "Retry-After" in responses["503"]["headers"], (method, path)
    assert "503" not in paths["/api/v1/health"]["get"]["responses"]
