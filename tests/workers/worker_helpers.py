"""Helpers for the worker-process tests: throw-away databases, tiny data, real worker processes."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from sqlalchemy import create_engine, make_url, select, text

from service.db import Epoch, Run, Worker, make_engine
from service.migrate import upgrade
from service.store import Store, UserInfo

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_SERVER = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}"


# -- databases ------------------------------------------------------------------------------
def create_pg_database(prefix: str = "as_test") -> str:
    """A fresh PostgreSQL database of our own; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{PG_SERVER}/{name}"


def drop_pg_database(url: str) -> None:
    """Drop a database made by create_pg_database, ending its leftover connections first."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    for _ in range(5):
        try:
            with admin.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            break
        except Exception:  # the server may be restarting (see the restart test)
            time.sleep(1)
    admin.dispose()


# -- PgBouncer --------------------------------------------------------------------------------
PGBOUNCER_POOL_SIZE = 6  # server connections per database: fewer than the racing clients


def pgbouncer_binary() -> str | None:
    """Debian's pgbouncer (in /usr/sbin, which a non-root PATH may lack)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def pgbouncer(workdir: Path, *, pool_size: int = PGBOUNCER_POOL_SIZE) -> Iterator[int]:
    """A PgBouncer in transaction pooling mode in front of the local PostgreSQL; yields its port.

    Every database of the server is reachable through it as user postgres (auth `any`: the
    server's own trust authentication stays the only check). Run as root, it drops to the
    postgres user, so its files live in a directory that user can read.
    """
    binary = pgbouncer_binary()
    assert binary is not None, "pgbouncer is not installed (apt-get install pgbouncer)"
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    port = free_port()
    as_user = ""
    if os.geteuid() == 0:  # pgbouncer refuses to run as root unless told whom to become
        as_user = "postgres" if _user_exists("postgres") else "nobody"
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = host={PG_HOST} port={PG_PORT} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 2000
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
{f"user = {as_user}" if as_user else ""}
"""
    )
    ini.chmod(0o644)
    with open(workdir / "pgbouncer.log", "ab") as log_file:
        process = subprocess.Popen(
            [binary, str(ini)], stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
        )
        try:
            wait_for(lambda: listening(port) or process.poll() is not None, 30, "pgbouncer")
            assert process.poll() is None, (workdir / "pgbouncer.log").read_text()
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def through_pgbouncer(url: str, port: int) -> str:
    """The same database reached through the PgBouncer on `port` (flagged: ?pgbouncer=true)."""
    pooled = make_url(url).set(port=port).update_query_dict({"pgbouncer": "true"})
    return pooled.render_as_string(hide_password=False)


def open_store(url: str) -> Store:
    """Migrate a fresh database and open the store on it."""
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return Store.open(url)


def make_user(store: Store, name: str = "alice") -> UserInfo:
    """A user to own studies."""
    user, _token = store.users.create(name)
    return user


# -- data and specs -------------------------------------------------------------------------
def make_image_folder(
    root: Path, classes: int = 10, train_per_class: int = 12, test_per_class: int = 4
) -> Path:
    """An image folder (train/<class>/*.png, test/<class>/*.png) of learnable 32×32 images."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for k in range(classes):
            folder = root / split / f"class{k:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 90, size=(32, 32, 3), dtype=np.uint8)
                pixels[3 * k : 3 * k + 3, :, k % 3] += 150  # a class-specific bright stripe
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def tiny_spec(
    folder: Path,
    *,
    n_trials: int,
    epochs: int = 1,
    name: str = "tiny",
    lr: Any = None,
    sampler: str = "random",
    pruner: str = "none",
    seeds: int = 1,
    priority: int = 0,
    activations: dict[str, Any] | None = None,
    width: float = 0.25,
) -> dict[str, Any]:
    """The cheapest study that still trains for real: lenet at a tiny width on a tiny folder."""
    return {
        "version": 1,
        "name": name,
        "dataset": {"name": "folder", "path": str(folder), "val_size": 20},
        "model": {"name": "lenet", "width": width},
        "training": {
            "epochs": epochs,
            "batch_size": 50,
            "eval_batch_size": 200,
            "lr": lr if lr is not None else {"low": 0.005, "high": 0.05, "log": True},
            "augment": {"crop_padding": 0, "flip": False},
        },
        "activations": activations or {"relu": {}, "leaky_relu": {}},
        "sampler": {"name": sampler},
        "pruner": {"name": pruner},
        "n_trials": n_trials,
        "seeds": seeds,
        "priority": priority,
    }


# -- worker processes -----------------------------------------------------------------------
def worker_env(url: str, home: Path, **settings: Any) -> dict[str, str]:
    """Environment of a worker process: our database and home, fast heartbeats."""
    env = dict(os.environ)
    env.update(
        {
            "ACTSEARCH_DATABASE_URL": url,
            "ACTSEARCH_HOME": str(home),
            "ACTSEARCH_HEARTBEAT_S": "0.5",
            # Generous: on a loaded 2-core CI box a live worker can be starved for seconds.
            # Tests of lost workers set their own short grace.
            "ACTSEARCH_GRACE_S": "30",
            "ACTSEARCH_LOG_LEVEL": "INFO",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"ACTSEARCH_{k.upper()}": str(v) for k, v in settings.items()})
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@contextmanager
def worker_processes(
    args: list[str], env: dict[str, str], log_path: Path, *, stop_timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m workers worker ARGS` (a supervisor and its slots); stopped with SIGTERM after."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers", "worker", *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            stop_process(process, stop_timeout)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 60) -> int | None:
    """SIGTERM, wait, then kill: what a service manager does."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll until predicate() is truthy; fail the test saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # the database may be restarting
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def runs_of(store: Store, study_id: int) -> list[Run]:
    """Every run row of a study, oldest first."""
    with store.db.session() as session:
        return list(session.scalars(select(Run).where(Run.study_id == study_id).order_by(Run.id)))


def epochs_of(store: Store, run_id: int) -> list[Epoch]:
    """A run's epoch rows in order."""
    with store.db.session() as session:
        return list(
            session.scalars(select(Epoch).where(Epoch.run_id == run_id).order_by(Epoch.epoch))
        )


def workers_of(store: Store) -> list[Worker]:
    """Every registered worker."""
    with store.db.session() as session:
        return list(session.scalars(select(Worker).order_by(Worker.started_at)))


def log_text(path: Path) -> str:
    """A worker log, for assertion messages."""
    return path.read_text(errors="replace") if path.exists() else ""
