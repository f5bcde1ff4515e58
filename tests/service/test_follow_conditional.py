"""`actsearch status ID --follow` polls conditionally: an unchanged study answers 304, no body.

The real CLI follows a study on a real server (two processes, access log on); the server's log
shows the 304s while nothing changes, and the follow still sees the study end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import Client
from service.store import Store
from tests.service.conftest import ROOT, add_trial, new_person, spec
from tests.support import free_port, uvicorn_command, wait_healthy

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture
def logged_server(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The app under uvicorn with its access log; (url, log path)."""
    port = free_port()
    log = tmp_path / "access.log"
    env = {
        **os.environ,
        "ACTSEARCH_DATABASE_URL": db_url,
        "ACTSEARCH_HOME": str(tmp_path),
        "ACTSEARCH_SESSION_SECRET": "s" * 32,
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            uvicorn_command(port, log_level="info"),
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def statuses(log: Path, path: str) -> list[int]:
    """The statuses the access log shows for GET `path` (query left out)."""
    pattern = re.compile(rf'"GET {re.escape(path)}(?:\?[^ ]*)? HTTP/1\.1" (\d{{3}})')
    return [int(m.group(1)) for m in pattern.finditer(log.read_text(errors="replace"))]


def test_follow_gets_304_while_the_study_is_unchanged(
    logged_server: tuple[str, Path], store: Store, tmp_path: Path
) -> None:
    url, log = logged_server
    owner = new_person(store, "follower")
    study, _ = store.studies.create(owner.info, spec(name="followed", n_trials=2))
    add_trial(store, study.id, value=0.7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    follow = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "status", str(study.id), "--follow",
         "--interval", "0.2", "--url", url, "--token", owner.token],
        cwd=ROOT, env={**env, "ACTSEARCH_HOME": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    path = f"/api/v1/studies/{study.id}"
    deadline = time.monotonic() + 60
    while statuses(log, path).count(304) < 3 and time.monotonic() < deadline:
        assert follow.poll() is None, follow.communicate()
        time.sleep(0.2)
    assert statuses(log, path).count(304) >= 3
    add_trial(store, study.id, value=0.8)  # the last trial: the study completes
    stdout, stderr = follow.communicate(timeout=60)
    assert follow.returncode == 0, stderr
    assert f"study {study.id} · followed · completed · 2/2 trials" in stdout
    assert statuses(log, path)[-1] == 200  # the change was seen


def test_poll_returns_the_kept_answer_on_304(logged_server: tuple[str, Path], store: Store) -> None:
    url, log = logged_server
    owner = new_person(store, "poller")
    study, _ = store.studies.create(owner.info, spec(name="polled", n_trials=3))
    client = Client(url, owner.token)
    path = f"/studies/{study.id}"
    first = client.poll(path)
    second = client.poll(path)
    assert second == first and second is not first
    assert statuses(log, f"/api/v1{path}")[-2:] == [200, 304]
    add_trial(store, study.id, value=0.6)
    # A poll accepts an answer up to POLL_MAX_STALE_S old: the first after the change may get
    # the previous one while the server computes the current one for the next poll.
    after = client.poll(path)["progress"]["complete"]
    deadline = time.monotonic() + 10
    while after != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = client.poll(path)["progress"]["complete"]
    assert after == 1
