"""Several API server processes behind one port (`actsearch serve --processes N`).

Every per-process state must agree across them: the session secret (made once, kept in the
database), the CSRF token derived from it, the ETags. The real `actsearch serve` runs with two
processes on a fresh database with no configured secret; one process is paused (SIGSTOP) while
the other signs a browser in, then the other way round for the changes that browser makes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from service import migrate
from service.db import Meta, make_engine
from service.runner import settings_env
from service.sessions import SECRET_KEY, shared_secret
from service.settings import MAX_AUTO_PROCESSES, Settings
from service.store import Store
from tests.service.conftest import BACKENDS, ROOT, spec
from tests.support import free_port, wait_healthy

pytestmark = pytest.mark.timeout(300)


def children(pid: int) -> list[int]:
    """The server processes `actsearch serve` started (multiprocessing's spawned children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


@contextmanager
def serve(db_url: str, home: Path, processes: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    env |= {"ACTSEARCH_DATABASE_URL": db_url, "ACTSEARCH_HOME": str(home)}  # no secret set
    log = home / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port),
             "--processes", str(processes)],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        deadline = time.monotonic() + 30
        while len(children(process.pid)) < processes and time.monotonic() < deadline:
            time.sleep(0.1)
        yield url, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def only(pid: int, among: list[int]) -> Iterator[None]:
    """Only `pid` accepts connections meanwhile: the others are stopped (briefly: the
    supervisor replaces a process that does not answer its health check for 5 s, which a
    loaded machine can reach while the other one serves; the replacement shares every state
    these tests check, so it may serve too)."""
    paused = [p for p in among if p != pid]
    for other in paused:
        with suppress(ProcessLookupError):  # replaced by the supervisor already
            os.kill(other, signal.SIGSTOP)
    try:
        yield
    finally:
        for other in paused:
            with suppress(ProcessLookupError):  # replaced by the supervisor meanwhile
                os.kill(other, signal.SIGCONT)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
    assert found, page.text[:500]
    return found.group(1)


@pytest.mark.slow
@pytest.mark.parametrize("empty_db_url", BACKENDS, indirect=True)
def test_a_browser_signed_in_on_one_process_works_on_the_other(
    empty_db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(empty_db_url)
    migrate.upgrade(engine)
    engine.dispose()
    store = Store.open(empty_db_url)
    _, token = store.users.create("owner", is_admin=True)
    with serve(empty_db_url, tmp_path, processes=2) as (url, process):
        first, second = children(process.pid)[:2]
        with only(first, [first, second]), httpx.Client(base_url=url, timeout=30) as browser:
            signed = browser.get(f"/login?token={token}", headers={"Sec-Fetch-Site": "none"})
            assert signed.status_code == 303 and "actsearch_session" in browser.cookies
            csrf = csrf_of(browser.get("/"))
            cookies = dict(browser.cookies)
        with only(second, [first, second]), httpx.Client(base_url=url, timeout=30) as browser:
            browser.cookies.update(cookies)
            page = browser.get("/")
            assert page.status_code == 200 and csrf_of(page) == csrf  # same secret, same token
            created = browser.post(
                "/api/v1/studies",
                json=spec(name="made-on-the-other-process"),
                headers={"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf},
            )
            assert created.status_code == 201, created.text
            study_id = created.json()["id"]
            tag = browser.get(f"/api/v1/studies/{study_id}").headers["ETag"]
        with only(first, [first, second]), httpx.Client(base_url=url, timeout=30) as browser:
            browser.cookies.update(cookies)
            again = browser.get(f"/api/v1/studies/{study_id}", headers={"If-None-Match": tag})
            assert again.status_code == 304  # the other process's tag holds here
            paused = browser.post(
                f"/api/v1/studies/{study_id}/pause",
                headers={"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf},
            )
            assert paused.status_code == 200, paused.text
        assert process.poll() is None
    store.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("empty_db_url", ["postgres"], indirect=True)
def test_processes_starting_together_agree_on_one_secret(empty_db_url: str) -> None:
    """A process whose insert of the secret waits on another's uncommitted one reads that one
    (before: a unique violation, and a server process that failed to start)."""
    engine = make_engine(empty_db_url)
    migrate.upgrade(engine)
    engine.dispose()
    store = Store.open(empty_db_url)
    found: list[str | BaseException] = []

    def start_another() -> None:
        try:
            found.append(shared_secret(store.db))
        except BaseException as error:  # the failure is the finding
            found.append(error)

    with store.db.session() as first:
        first.add(Meta(key=SECRET_KEY, value="the-first-one"))
        first.flush()  # inserted, not committed: the other process's insert waits on it
        other = threading.Thread(target=start_another)
        other.start()
        time.sleep(0.5)
    other.join(timeout=30)
    assert found == ["the-first-one"]
    store.dispose()


def test_auto_processes_is_one_per_core_bounded() -> None:
    expected = max(1, min(os.cpu_count() or 1, MAX_AUTO_PROCESSES))
    assert Settings(processes=0).resolved_processes == expected
    assert Settings(processes=3).resolved_processes == 3


def test_server_processes_get_the_settings_of_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Flags (--port, --database-url, …) reach the server processes through the environment."""
    given = Settings(
        home=tmp_path, port=8123, host="0.0.0.0", processes=2, data=None, trust_proxy=True,
        database_url=f"sqlite:///{tmp_path / 'x.db'}", grace_s=12.5,
    )  # fmt: skip
    for name in [n for n in os.environ if n.startswith("ACTSEARCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ACTSEARCH_DATA", "/somewhere/else")  # unset: the command said none
    for name, value in settings_env(given).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert Settings() == given
