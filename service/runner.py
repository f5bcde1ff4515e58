"""Start-up sequences of `actsearch up` and `actsearch serve` (wait for DB, migrate, seed, serve)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import webbrowser
from contextlib import suppress

import uvicorn

from service import migrate
from service.app import create_app
from service.client import write_local_client
from service.db import make_engine
from service.settings import Settings
from service.store import Store, UserInfo

log = logging.getLogger("actsearch")

UP_LOGIN_LABEL = "up-login"


def local_admin(store: Store) -> UserInfo:
    """The admin `actsearch up` signs in as; created on first start."""
    admins = [u for u in store.users.list() if u.is_admin]
    if admins:
        return next((u for u in admins if u.name == "admin"), admins[0])
    user, _ = store.users.create("admin", is_admin=True)
    log.info("created the local admin user 'admin'")
    return user


def fresh_login_token(store: Store, user: UserInfo) -> str:
    """A new login token for this start; the previous start's one is revoked."""
    for old in store.users.tokens(user.id):
        if old.label == UP_LOGIN_LABEL and old.revoked_at is None:
            store.users.revoke_token(old.id)
    _, secret = store.users.issue_token(user.id, UP_LOGIN_LABEL)
    return secret


def _worker_command(settings: Settings, gpus: str) -> list[str]:
    command = [sys.executable, "-m", "workers", "worker"]
    if gpus != "auto":
        command += ["--gpus", gpus]
    return command


def _worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["ACTSEARCH_DATABASE_URL"] = settings.resolved_database_url
    env["ACTSEARCH_HOME"] = str(settings.home)
    if settings.data:
        env["ACTSEARCH_DATA"] = settings.data
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGTERM lets the worker hand its running trial back; kill only if it hangs.
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _serve(settings: Settings, store: Store) -> None:
    app = create_app(settings, store)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    uvicorn.Server(config).run()


def run_up(
    settings: Settings, *, gpus: str = "auto", with_worker: bool = True, open_browser: bool = False
) -> int:
    """Migrate, ensure a local admin, start one worker, serve; prints the login URL."""
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(make_engine(settings.resolved_database_url))
    store = Store.open(settings.resolved_database_url, max_attempts=settings.max_attempts)
    token = fresh_login_token(store, local_admin(store))
    base = f"http://{settings.host}:{settings.port}"
    write_local_client(base, token, settings.home)
    login_url = f"{base}/login?token={token}"
    print(
        f"\n  actsearch is starting on {base}  (database: {settings.resolved_database_url})\n"
        f"  Open the dashboard signed in: {login_url}\n"
        f"  The CLI on this machine uses it already: actsearch submit examples/quickstart.yaml "
        f"--follow\n",
        flush=True,
    )
    if not settings.data:
        print(
            "  note: no --data / ACTSEARCH_DATA given; studies on cifar10/cifar100 need the "
            "torchvision CIFAR files (downloaded when online) or an image-folder tarball such "
            "as ../shared/data/cifar10-jpg.tar.xz passed as --data\n",
            flush=True,
        )
    worker = None
    if with_worker:
        worker = subprocess.Popen(_worker_command(settings, gpus), env=_worker_env(settings))
    if open_browser:
        with suppress(Exception):
            webbrowser.open(login_url)
    try:
        _serve(settings, store)
    finally:
        if worker is not None:
            _stop(worker)
        store.dispose()
    return 0


def run_serve(settings: Settings) -> int:
    """Serve the API and the dashboard on an already migrated database."""
    store = Store.open(settings.resolved_database_url, max_attempts=settings.max_attempts)
    _serve(settings, store)
    return 0
