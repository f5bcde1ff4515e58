"""Start-up sequences of `actsearch up` and `actsearch serve` (wait for DB, migrate, seed, serve)."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import webbrowser
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors.multiprocess import Multiprocess

from service import migrate
from service.app import POOL, SERVER_PARENT_ENV, create_app
from service.client import saved_client, write_local_client
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


def fresh_login_token(store: Store, user: UserInfo) -> tuple[str, bool]:
    """A new login token; the earlier starts' ones are revoked. (token, whether one was)."""
    revoked = False
    for old in store.users.tokens(user.id):
        if old.label == UP_LOGIN_LABEL and old.revoked_at is None:
            store.users.revoke_token(old.id)
            revoked = True
    _, secret = store.users.issue_token(user.id, UP_LOGIN_LABEL)
    return secret, revoked


def _is_login_token(store: Store, user: UserInfo, token: str) -> bool:
    """Whether `token` is a live login token of `user` issued by `actsearch up`."""
    owner = store.users.authenticate(token)
    if owner is None or owner.id != user.id:
        return False
    return any(
        t.label == UP_LOGIN_LABEL and t.revoked_at is None and token.startswith(t.prefix)
        for t in store.users.tokens(user.id)
    )


@dataclass(frozen=True)
class Login:
    """The login token of this start, and how it relates to the previous start's."""

    token: str
    kept: bool  # the saved one, still valid: the same login link and CLI login as before
    revoked: bool  # a new one replaced earlier ones: their links no longer work


def login_token(store: Store, user: UserInfo, home: Path, *, new: bool = False) -> Login:
    """The saved login token when it is still the admin's (links and the CLI keep working
    across restarts), else — or with `new` — a fresh one that revokes the earlier ones."""
    _, saved = saved_client(home)
    if not new and saved and _is_login_token(store, user, saved):
        return Login(saved, kept=True, revoked=False)
    token, revoked = fresh_login_token(store, user)
    return Login(token, kept=False, revoked=revoked)


def cli_command() -> str:
    """How to run the CLI from here: `actsearch` when that is on PATH, else its path
    (`.venv/bin/actsearch` after `make run`, whose venv is not activated)."""
    script = Path(sys.argv[0])
    if script.name != "actsearch":  # python -m service.cli: the script next to this python
        script = Path(sys.executable).with_name("actsearch")
    if not script.exists():
        return "actsearch"
    on_path = shutil.which("actsearch")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "actsearch"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:  # outside the working directory: the full path
        return str(script.absolute())


def banner(base: str, database: str, login: Login, command: str) -> str:
    """What `actsearch up` prints once it is about to serve."""
    link = f"{base}/login?token={login.token}"
    if login.kept:
        about = "  (the same link as the last start: it stays valid across restarts)\n"
    elif login.revoked:
        about = (
            "  (a new link: the previous login link no longer works; `actsearch up` keeps "
            "this one from now on)\n"
        )
    else:
        about = ""
    return (
        f"\n  actsearch is starting on {base}  (database: {database})\n"
        f"  Open the dashboard signed in: {link}\n{about}"
        f"  In a second terminal (the CLI on this machine is signed in already):\n"
        f"    {command} submit examples/quickstart.yaml --follow\n"
    )


def _worker_command(settings: Settings, gpus: str) -> list[str]:
    # --parent-pid: the worker stops (its slots hand their trials back) when `up` dies, even of
    # a SIGKILL that leaves no chance to stop it from here.
    command = [sys.executable, "-m", "workers", "worker", "--parent-pid", str(os.getpid())]
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


WORKER_STOP_S = 60.0  # a worker's current epoch may finish and hand its run back in this time
WORKER_HURRY_S = 15.0  # after a second SIGTERM (stop now), before the worker is killed


class _StopSignals:
    """SIGTERM/SIGINT of `up`/`serve`: remembered, never re-raised, so the worker is stopped.

    uvicorn handles both signals while it serves, then re-raises the one it caught with the
    handler that was there before it. With the default handler SIGTERM would kill this process
    before the worker is stopped (orphaning it); this handler only records the signal, makes
    the server exit (also when it arrives before uvicorn installed its own) and, while the
    worker is being stopped, passes further signals on to it (the second: stop now).
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.server: uvicorn.Server | None = None
        self.stopping: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on."""
        self._previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def take_back(self) -> None:
        """Handle them again after uvicorn's process supervisor replaced the handlers (restore()
        still puts back those install() found)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers install() replaced."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.server is not None:
            self.server.should_exit = True
        worker = self.stopping
        if worker is not None and worker.poll() is None:
            log.info("%s: telling the worker to stop now", signal.Signals(signum).name)
            worker.send_signal(signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes], signals: _StopSignals) -> None:
    # SIGTERM lets the worker finish its epoch and hand its run back; a second one (from here
    # after WORKER_STOP_S, or from the user) stops it at once; kill only if it still hangs.
    if process.poll() is not None:
        return
    log.info("stopping the worker (pid %s): its running trials are handed back", process.pid)
    signals.stopping = process
    process.send_signal(signal.SIGTERM)
    for timeout in (WORKER_STOP_S, WORKER_HURRY_S):
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
    log.warning("the worker (pid %s) did not stop; killing it", process.pid)
    process.kill()
    process.wait()


def _serve(settings: Settings, store: Store, signals: _StopSignals) -> None:
    processes = settings.resolved_processes
    if processes > 1:
        _serve_processes(settings, processes, signals)
        return
    app = create_app(settings, store)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    server = uvicorn.Server(config)
    signals.server = server
    if signals.received:  # stopped while starting up: do not serve at all
        return
    server.run()


APP_FACTORY = "service.app:app_from_env"  # what each server process builds its app with


def settings_env(settings: Settings) -> dict[str, str | None]:
    """ACTSEARCH_* variables that make Settings() in another process equal `settings` (None:
    unset), flags and defaults included."""
    env: dict[str, str | None] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None or isinstance(value, (str, int, float, bool, Path)):
            text = (
                None
                if value is None
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
        else:
            text = json.dumps(value)
        env[f"ACTSEARCH_{name.upper()}"] = text
    return env


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging, and ours as the CLI sets it, in every server process."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["actsearch"] = {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"
    }
    config["handlers"]["actsearch"] = {
        "class": "logging.StreamHandler",
        "formatter": "actsearch",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["actsearch"], "level": settings.log_level.upper()}
    return config


def _serve_processes(settings: Settings, processes: int, signals: _StopSignals) -> None:
    """`processes` uvicorn processes on one socket, each building the app from the environment
    (every per-process state is shared through the database: sessions, CSRF, the counters
    behind ETags); a process that dies is replaced."""
    for name, value in settings_env(settings).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.environ[SERVER_PARENT_ENV] = str(os.getpid())  # they end with us, even after kill -9
    # The processes share one listening socket. libuv (uvloop) accepts every pending connection
    # in one go, so a burst of clients (50 dashboards opened at once) landed 40 on one process
    # and 10 on the other, for as long as their connections lived. One accept per wake-up
    # spreads them (measured: 40/10 before, 22/28 after).
    os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=processes,
        log_level=settings.log_level.lower(),
        log_config=log_config(settings),
        access_log=False,
    )
    if signals.received:  # stopped while starting up: do not serve at all
        return
    sock = config.bind_socket()
    try:
        supervisor = Multiprocess(config, sockets=[sock])  # takes SIGINT/SIGTERM until it ends
        if not signals.received:
            supervisor.run()
    finally:
        sock.close()
        _stop_resource_tracker()
        signals.take_back()  # a signal while the worker stops must reach it


def _stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker (started with the spawned server processes) now:
    it would end only when its pipe closes, just after we exit, and nothing may outlive us."""
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop = getattr(tracker, "_stop", None)  # private; missing elsewhere: it ends after us
    if stop is not None:
        with suppress(Exception):
            stop()


def run_up(
    settings: Settings,
    *,
    gpus: str = "auto",
    with_worker: bool = True,
    open_browser: bool = False,
    new_login: bool = False,
) -> int:
    """Migrate, ensure a local admin, start one worker, serve (`processes` server processes,
    one worker supervisor); prints the login URL."""
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(make_engine(settings.resolved_database_url))
    store = Store.open(settings.resolved_database_url, max_attempts=settings.max_attempts, **POOL)
    login = login_token(store, local_admin(store), settings.home, new=new_login)
    base = f"http://{settings.host}:{settings.port}"
    write_local_client(base, login.token, settings.home)
    login_url = f"{base}/login?token={login.token}"
    print(banner(base, settings.resolved_database_url, login, cli_command()), flush=True)
    if not settings.data:
        print(
            "  note: no --data / ACTSEARCH_DATA given; studies on cifar10/cifar100 need the "
            "torchvision CIFAR files (downloaded when online) or an image-folder tarball such "
            "as ../shared/data/cifar10-jpg.tar.xz passed as --data\n",
            flush=True,
        )
    signals = _StopSignals()
    signals.install()  # before the worker exists: from then on a signal must stop it too
    worker = None
    try:
        if with_worker:
            # Its own session: a terminal's Ctrl-C reaches only `up`, which passes one SIGTERM
            # on (two signals would tell the worker to stop at once instead of after its epoch).
            worker = subprocess.Popen(
                _worker_command(settings, gpus), env=_worker_env(settings), start_new_session=True
            )
        if open_browser:
            with suppress(Exception):
                webbrowser.open(login_url)
        _serve(settings, store, signals)
    finally:
        if worker is not None:
            _stop(worker, signals)
        store.dispose()
        signals.restore()
    return 0


def run_serve(settings: Settings) -> int:
    """Serve the API and the dashboard on an already migrated database (`processes` of them)."""
    store = Store.open(settings.resolved_database_url, max_attempts=settings.max_attempts, **POOL)
    signals = _StopSignals()
    signals.install()
    try:
        _serve(settings, store, signals)
    finally:
        store.dispose()
        signals.restore()
    return 0
