"""Property-based checks of the OpenAPI schema against the real server (schemathesis CLI).

A fresh database per backend, seeded with users, studies and trials so that path ids reach real
objects; uvicorn in a subprocess; schemathesis generates requests from /api/v1/openapi.json
(coverage and fuzzing phases, a fixed seed, a few examples per operation) and checks that no
response is a 5xx, that every status, content type, header and body is the documented one, and
that requests the schema forbids are refused with a 4xx.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service import migrate
from service.db import make_engine
from service.store import Store
from tests.service.campaign_helpers import campaign
from tests.service.conftest import BACKENDS, add_trial, new_person, spec, start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)
# Fuzzing DELETE /tokens/{id} may revoke the very token the run uses: it gets a run of its own.
REVOKE = "revoke_token_api_v1_tokens__token_id__delete"


def schemathesis(base_url: str, token: str, workdir: Path, phases: str, *selection: str) -> None:
    """One bounded schemathesis run; fails the test with its report on any failure."""
    command = [
        str(SCHEMATHESIS), "run", f"{base_url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", CHECKS, "--phases", phases, "--max-examples", "5",
        "--seed", "20261123", "--workers", "1", "--request-timeout", "30", *selection,
    ]  # fmt: skip
    # Its caches (.schemathesis, .hypothesis) go to the test's directory, not the checkout.
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


@pytest.mark.parametrize("empty_db_url", BACKENDS, indirect=True)
def test_the_schema_holds_against_the_running_server(empty_db_url: str, tmp_path: Path) -> None:
    engine = make_engine(empty_db_url)
    migrate.upgrade(engine)
    engine.dispose()
    store = Store.open(empty_db_url)
    try:
        admin = new_person(store, "admin", admin=True)
        user = new_person(store, "user")  # owns the seeded studies
        revoker = new_person(store, "revoker")
        for name in ("seeded-a", "seeded-b"):
            study_id = store.studies.create(user.info, spec(name=name, n_trials=6))[0].id
            add_trial(store, study_id, family="relu", value=0.8, record={"activation_curves": {}})
            add_trial(
                store,
                study_id,
                family="smu",
                params={"activation": "smu", "smu.alpha": 0.2},
                value=0.85,
            )
            add_trial(store, study_id, family="smu", value=None, state="pruned")
        store.campaigns.create(user.info, campaign(name="seeded-campaign"))  # ids 1.. reach it
    finally:
        store.dispose()
    # The coverage phase (boundary and negative values of every parameter, unexpected methods)
    # is most of the time: it runs on PostgreSQL, the stricter database (NUL bytes, 32-bit
    # columns); SQLite gets the fuzzing phase. An admin token reaches every operation; the
    # ordinary user's 403s are checked route by route in test_api_auth.py.
    postgres = not empty_db_url.startswith("sqlite")
    phases = "coverage,fuzzing" if postgres else "fuzzing"
    server = start_server(empty_db_url, tmp_path)
    try:
        schemathesis(server.url, admin.token, tmp_path, phases, "--exclude-operation-id", REVOKE)
        schemathesis(server.url, revoker.token, tmp_path, phases, "--include-operation-id", REVOKE)
    finally:
        stop_server(server)
    log = server.log.read_text()
    assert "Traceback" not in log, log[-4000:]
