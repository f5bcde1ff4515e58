"""The README's path, end to end: `actsearch up`, then `actsearch submit … --follow`.

Issue 2's acceptance: on the CPU, with the shared CIFAR-10 tarball as data, the quickstart
completes every trial (SQLite and PostgreSQL), and the study, its trials and their per-epoch
values are readable through the API and the dashboard; without data and offline, a clear,
actionable error, a non-zero exit and nothing half-written.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import shared_tarball
from tests.e2e.conftest import ROOT, Service, start_service, stop_service

QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def _check_study_readable(service: Service, study_id: int) -> None:
    spec = yaml.safe_load(QUICKSTART.read_text())
    with service.api() as api:
        study = api.get(f"/studies/{study_id}").json()
        assert study["status"] == "completed"
        assert study["progress"]["budget"] == spec["n_trials"]
        trials = api.get(f"/studies/{study_id}/trials", params={"limit": 100}).json()
        numbers = [t["number"] for t in trials["items"]]
        assert len(numbers) == len(set(numbers)) == spec["n_trials"]
        finished = [t for t in trials["items"] if t["state"] == "complete"]
        assert finished, "no trial completed"
        for trial in finished:
            detail = api.get(f"/studies/{study_id}/trials/{trial['number']}").json()
            epochs = detail["epochs"]
            assert [e["epoch"] for e in epochs] == list(range(spec["training"]["epochs"]))
            assert all(0.0 <= e["val_acc"] <= 1.0 for e in epochs)
            assert detail["value"] == pytest.approx(epochs[-1]["val_acc"])
            assert detail["record"]["manifest"]["data_checksum"]
        families = {t["family"] for t in trials["items"]}
        assert "relu" in families  # the baseline ran first
    with httpx.Client(base_url=service.url, follow_redirects=True, timeout=30) as browser:
        # As the printed link opened from a terminal (Sec-Fetch-Site: none): it signs in at once.
        link = {"token": service.token}
        signed_in = browser.get("/login", params=link, headers={"Sec-Fetch-Site": "none"})
        assert signed_in.status_code == 200
        page = browser.get(f"/studies/{study_id}")
        assert page.status_code == 200 and "quickstart" in page.text
        trial_page = browser.get(f"/studies/{study_id}/trials/0")
        assert trial_page.status_code == 200


def _check_no_training_twice(database_url: str, study_id: int) -> None:
    """Issue 17: the quickstart (TPE keeps drawing relu) trains no (configuration, seed) twice."""
    from sqlalchemy import select

    from search_space.contract import parse_trial_config
    from service.db import Run, Training
    from service.store import Store

    store = Store.open(database_url)
    try:
        with store.db.session() as session:
            runs = list(session.scalars(select(Run).where(Run.study_id == study_id)))
            trainings = list(session.scalars(select(Training).where(Training.study_id == study_id)))
    finally:
        store.dispose()
    trained = [r for r in runs if r.state == "complete" and r.reused_from_run is None]
    pairs = []
    for run in trained:
        config = parse_trial_config(run.config or {})
        pairs.append((config.configuration_key("", ""), config.seed))
    assert len(pairs) == len(set(pairs)), pairs
    keys = [t.key for t in trainings if t.state == "complete" and t.reused_from is None]
    assert len(keys) == len(set(keys)) and len(keys) == len(trained)


def _run_quickstart(home: Path, database_url: str | None) -> None:
    tarball = shared_tarball()
    assert tarball is not None
    service = start_service(home, database_url=database_url, data=str(tarball))
    try:
        result = service.cli("submit", str(QUICKSTART), "--follow", "--interval", "1")
        assert result.returncode == 0, result.stdout + result.stderr + service.log.read_text()
        assert "completed" in result.stdout
        _check_study_readable(service, 1)
        _check_no_training_twice(database_url or f"sqlite:///{home / 'actsearch.db'}", 1)
    finally:
        stop_service(service)


@pytest.mark.realdata
@pytest.mark.slow
def test_quickstart_on_sqlite(tmp_path: Path) -> None:
    _run_quickstart(tmp_path, None)


@pytest.mark.realdata
@pytest.mark.postgres
@pytest.mark.slow
def test_quickstart_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    _run_quickstart(tmp_path, postgres_url)


def test_without_data_offline_fails_clearly(tmp_path: Path) -> None:
    # ACTSEARCH_DOWNLOAD=0 makes "offline" hold on any machine (CI has no internet anyway).
    service = start_service(
        tmp_path, database_url=None, data=None, extra_env={"ACTSEARCH_DOWNLOAD": "0"}
    )
    try:
        result = service.cli("submit", str(QUICKSTART), "--follow", "--interval", "1", timeout=300)
        assert result.returncode != 0
        message = result.stderr
        assert "Traceback" not in message + result.stdout
        assert "--data" in message and "ACTSEARCH_DATA" in message
        assert "cifar10-jpg.tar.xz" in message  # names the image-folder tarball option
        with service.api() as api:
            study = api.get("/studies/1").json()
            assert study["status"] == "failed" and "--data" in study["error"]
            trials = api.get("/studies/1/trials").json()
            assert trials["total"] == 0  # nothing half-written
        status = service.cli("status", "1", timeout=60)
        assert status.returncode == 0 and "failed" in status.stdout
        assert "note:" in status.stdout and "--data" in status.stdout  # says why
    finally:
        stop_service(service)
