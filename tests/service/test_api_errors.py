"""Error bodies, request ids, 500s without tracebacks, readiness and the workers view."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service import migrate
from service.app import create_app
from service.db import Run, Worker, make_engine, utcnow
from service.settings import Settings
from service.store import Store
from tests.service.conftest import BACKENDS, Person, spec

pytestmark = pytest.mark.timeout(300)


def test_every_response_has_a_request_id(api: httpx.Client, alice: Person) -> None:
    for response in (
        api.get("/api/v1/health"),
        api.get("/api/v1/me", headers=alice.headers),
        api.get("/api/v1/me"),
        api.get("/api/v1/studies/424242", headers=alice.headers),
        api.get("/api/v1/nowhere", headers=alice.headers),
    ):
        assert len(response.headers["x-request-id"]) >= 16
        if response.status_code >= 400:
            assert response.json()["request_id"] == response.headers["x-request-id"]
    echoed = api.get("/api/v1/health", headers={"X-Request-ID": "trace-123.a"})
    assert echoed.headers["x-request-id"] == "trace-123.a"
    unsafe = api.get("/api/v1/health", headers={"X-Request-ID": "bad id\twith tab"})
    assert unsafe.headers["x-request-id"] != "bad id\twith tab"


def test_validation_errors_name_the_parameter(api: httpx.Client, alice: Person) -> None:
    response = api.get("/api/v1/studies", params={"limit": "many"}, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": "query.limit", "msg": response.json()["detail"][0]["msg"]}
    ]
    assert (
        api.get("/api/v1/studies/abc", headers=alice.headers).json()["detail"][0]["loc"]
        == "path.study_id"
    )


def test_a_crash_is_a_json_500_without_traceback_and_is_logged(
    settings: Settings, store: Store, alice: Person, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings, store, reap_interval_s=None)

    @app.get("/api/v1/crash")
    def crash() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        response = client.get("/api/v1/crash", headers={**alice.headers, "X-Request-ID": "req-500"})
    assert response.status_code == 500
    body = response.json()
    assert body["request_id"] == "req-500" == response.headers["x-request-id"]
    assert "req-500" in body["detail"]
    assert "hunter2" not in response.text and "Traceback" not in response.text
    logged = [r for r in caplog.records if "req-500" in r.getMessage()]
    assert logged and logged[0].exc_info is not None


@pytest.mark.parametrize("empty_db_url", BACKENDS, indirect=True)
def test_ready_is_503_until_the_schema_is_current(empty_db_url: str, tmp_path: Path) -> None:
    engine = make_engine(empty_db_url)
    migrate.upgrade(engine, "0001")
    store = Store.open(empty_db_url, check=False)
    try:
        app = create_app(
            Settings(database_url=empty_db_url, home=tmp_path, session_secret="x" * 32),
            store,
            reap_interval_s=None,
        )
        with TestClient(app) as client:
            stale = client.get("/api/v1/ready")
            assert stale.status_code == 503
            assert "actsearch db upgrade" in stale.json()["detail"]
            migrate.upgrade(engine)
            ready = client.get("/api/v1/ready").json()
            assert ready == {
                "status": "ready",
                "database": engine.dialect.name,
                "schema_revision": migrate.head_revision(),
            }
    finally:
        store.dispose()
        engine.dispose()


def test_workers_show_current_trial_and_staleness(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    busy, silent = f"busy-{study_id}", f"silent-{study_id}"
    for worker_id in (busy, silent):
        store.workers.register(
            worker_id, hostname="gpu-box", pid=4242, device="cuda:0 (H100)", slot=0
        )
    claim = store.runs.claim_next(busy, [study_id])
    assert claim is not None
    store.workers.heartbeat(busy, claim.run_id)
    store.runs.report_epoch(
        claim.run_id,
        2,
        train_loss=0.5,
        val_acc=0.6,
        img_per_s=12345.0,
        elapsed_s=3.0,
        worker_id=busy,
    )
    with store.db.session() as session:  # a worker that stopped heartbeating two minutes ago
        session.execute(
            update(Worker)
            .where(Worker.id == silent)
            .values(heartbeat_at=utcnow() - timedelta(minutes=2))
        )

    workers = {w["id"]: w for w in api.get("/api/v1/workers", headers=alice.headers).json()}
    assert workers[busy]["status"] == "busy"
    assert workers[busy]["current_run_id"] == claim.run_id
    assert workers[busy]["current_study_id"] == study_id
    assert workers[busy]["current_epoch"] == 2
    assert workers[busy]["img_per_s"] == pytest.approx(12345.0)
    assert workers[busy]["heartbeat_age_s"] < 30 and not workers[busy]["stale"]
    assert workers[silent]["heartbeat_age_s"] >= 119 and workers[silent]["stale"]
    store.runs.finish(claim.run_id, state="complete", value=0.6)


def test_background_reaper_fails_lost_runs_with_no_worker_alive(
    settings: Settings, store: Store, alice: Person
) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    claim = store.runs.claim_next("w-vanished", [study_id])
    assert claim is not None
    with store.db.session() as session:
        session.execute(
            update(Run)
            .where(Run.id == claim.run_id)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    app = create_app(settings.model_copy(update={"grace_s": 30.0}), store, reap_interval_s=0.2)
    with TestClient(app):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and store.runs.status(claim.run_id).state == "running":
            time.sleep(0.2)
    assert store.runs.status(claim.run_id).state == "failed"
    with store.db.session() as session:
        run = session.get(Run, claim.run_id)
        assert run is not None and run.failure_reason == "worker_lost"
