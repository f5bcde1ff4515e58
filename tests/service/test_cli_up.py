"""`actsearch up`'s login link and banner: the link stays valid across restarts (a new one only on
request, saying the old one stopped working), and the banner names the CLI as it can be run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service.client import saved_client, write_local_client
from service.runner import Login, banner, cli_command, login_token
from service.store import Store
from tests.service.conftest import ROOT, new_person
from tests.support import free_port, wait_healthy

pytestmark = pytest.mark.timeout(300)


def test_the_saved_login_token_is_kept_while_valid(store: Store, tmp_path: Path) -> None:
    admin = new_person(store, "up-admin", admin=True).info
    first = login_token(store, admin, tmp_path)
    assert (first.kept, first.revoked) == (False, False)
    write_local_client("http://127.0.0.1:8000", first.token, tmp_path)

    again = login_token(store, admin, tmp_path)
    assert again == Login(first.token, kept=True, revoked=False)
    assert store.users.authenticate(first.token) is not None

    renewed = login_token(store, admin, tmp_path, new=True)
    assert renewed.token != first.token and (renewed.kept, renewed.revoked) == (False, True)
    assert store.users.authenticate(first.token) is None  # the old link stops working


def test_a_saved_token_that_is_not_this_admins_login_is_replaced(
    store: Store, tmp_path: Path
) -> None:
    admin = new_person(store, "up-admin", admin=True).info
    someone = new_person(store, "someone")
    write_local_client("http://127.0.0.1:8000", someone.token, tmp_path)
    assert not login_token(store, admin, tmp_path).kept
    own = new_person(store, "up-admin", admin=True)  # an admin's token, but not a login token
    write_local_client("http://127.0.0.1:8000", own.token, tmp_path)
    assert not login_token(store, own.info, tmp_path).kept


def test_the_banner_says_whether_the_link_changed() -> None:
    base = "http://127.0.0.1:8000"
    kept = banner(base, "sqlite:///x.db", Login("as_t", kept=True, revoked=False), "actsearch")
    assert f"{base}/login?token=as_t" in kept and "stays valid across restarts" in kept
    assert "actsearch submit examples/quickstart.yaml --follow" in kept
    new = banner(base, "sqlite:///x.db", Login("as_u", kept=False, revoked=True), "bin/actsearch")
    assert "the previous login link no longer works" in new
    assert "bin/actsearch submit examples/quickstart.yaml --follow" in new
    first = banner(base, "sqlite:///x.db", Login("as_v", kept=False, revoked=False), "actsearch")
    assert "previous" not in first and "restarts" not in first


def test_cli_command_is_the_path_when_not_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "venv" / "bin" / "actsearch"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "up"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert cli_command() == "venv/bin/actsearch"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert cli_command() == "actsearch"


def _up(home: Path, port: int, *args: str) -> str:
    """Run `.venv/bin/actsearch up --no-worker` as `make run` does (its venv not on PATH) until
    it serves; stop it with Ctrl-C; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    bin_dir = str(Path(sys.executable).parent)
    path = ":".join(p for p in env.get("PATH", "").split(":") if p and p != bin_dir)
    env.update(ACTSEARCH_HOME=str(home), ACTSEARCH_PORT=str(port), PATH=path)
    script = Path(sys.executable).with_name("actsearch")
    log = home / f"up-{len(list(home.glob('up-*.log')))}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [os.path.relpath(script, ROOT), "up", "--no-worker", *args], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log, timeout_s=120)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    return log.read_text()


@pytest.mark.slow
def test_up_keeps_its_login_link_across_restarts(tmp_path: Path) -> None:
    if not Path(sys.executable).with_name("actsearch").exists():
        pytest.skip("the actsearch script is not installed next to this python")
    port = free_port()
    first = _up(tmp_path, port)
    _, token = saved_client(tmp_path)
    assert f"/login?token={token}" in first
    command = os.path.relpath(Path(sys.executable).with_name("actsearch"), ROOT)
    assert f"    {command} submit examples/quickstart.yaml --follow" in first  # .venv/bin/…
    second = _up(tmp_path, port)
    assert saved_client(tmp_path)[1] == token
    assert f"/login?token={token}" in second and "stays valid across restarts" in second
    third = _up(tmp_path, port, "--new-login")
    assert saved_client(tmp_path)[1] != token
    assert "the previous login link no longer works" in third
