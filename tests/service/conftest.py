"""Fixtures of the API tests: a real database per backend, the real app, real users and trials.

Every database is created for this test session and dropped after it (PostgreSQL:
`as_test_<random>`), so parallel runs never share one. Trials are made through the worker-facing
store API (claim_next / attach_trial / report_epoch / finish) with real Optuna trials.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service import migrate
from service.app import create_app
from service.db import make_engine
from service.settings import Settings
from service.store import Store, UserInfo
from tests.support import free_port, uvicorn_command, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC: dict[str, Any] = {
    "version": 1,
    "name": "t",
    "dataset": {"name": "cifar10"},
    "model": "lenet",
    "training": {"epochs": 1},
    "activations": {"relu": {}, "smu": {"alpha": {"low": 0.0, "high": 0.5}}},
    "n_trials": 4,
}


def spec(**changes: Any) -> dict[str, Any]:
    """A valid minimal spec with top-level fields changed."""
    return {**SPEC, **changes}


# -- databases -----------------------------------------------------------------------------------
def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database of our own; its URL."""
    name = f"as_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return f"{PG_SERVER}/{name}"


def drop_pg_database(url: str) -> None:
    """Drop a database made by create_pg_database (closing whatever still holds it)."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database of the backend named by the test's `backend` parameter."""
    backend = request.param if hasattr(request, "param") else "sqlite"
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="pg", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database for this session: SQLite file or a PostgreSQL database of our own."""
    with migrated_database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def pg_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store on a PostgreSQL database of the test module's own."""
    with migrated_database("postgres", tmp_path_factory.mktemp("db")) as url:
        opened = Store.open(url)
        yield opened
        opened.dispose()


@contextmanager
def migrated_database(backend: str, folder: Path) -> Iterator[str]:
    """A migrated database: an SQLite file in `folder`, or a PostgreSQL database of our own
    (dropped after)."""
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'actsearch.db'}"
        migrate.upgrade(make_engine(url))
        yield url
        return
    url = create_pg_database()
    try:
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session")
def store(db_url: str) -> Iterator[Store]:
    """The store on the session's database."""
    opened = Store.open(db_url)
    yield opened
    opened.dispose()


@pytest.fixture(scope="session")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the session's database."""
    return Settings(
        database_url=db_url, home=tmp_path_factory.mktemp("home"), session_secret="s" * 32
    )


@pytest.fixture(scope="session")
def app(settings: Settings, store: Store) -> Any:
    """The real app on the session's store (no background reaper: tests reap explicitly)."""
    return create_app(settings, store, reap_interval_s=None)


@pytest.fixture(scope="session")
def inprocess(app: Any) -> Iterator[TestClient]:
    """An httpx client calling the app in-process (lifespan run)."""
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# -- users -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Person:
    """A user with a token and the headers that carry it."""

    info: UserInfo
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header of this user."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def name(self) -> str:
        """The user's name."""
        return self.info.name


def new_person(store: Store, prefix: str, *, admin: bool = False) -> Person:
    """A fresh user with a unique name (tests share the session database)."""
    info, token = store.users.create(f"{prefix}-{uuid.uuid4().hex[:8]}", is_admin=admin)
    return Person(info, token)


@pytest.fixture
def admin(store: Store) -> Person:
    """A fresh admin."""
    return new_person(store, "admin", admin=True)


@pytest.fixture
def alice(store: Store) -> Person:
    """A fresh ordinary user."""
    return new_person(store, "alice")


@pytest.fixture
def bob(store: Store) -> Person:
    """Another fresh ordinary user."""
    return new_person(store, "bob")


# -- trials through the worker-facing store API ---------------------------------------------
def add_trial(
    store: Store,
    study_id: int,
    *,
    family: str = "relu",
    params: dict[str, Any] | None = None,
    value: float | None = 0.5,
    test_acc: float | None = None,
    state: str = "complete",
    epochs: int = 2,
    record: dict[str, Any] | None = None,
    worker_id: str = "w-test",
) -> int:
    """Claim, attach, report and finish one trial the way a worker does; returns its number."""
    claim = store.runs.claim_next(worker_id, [study_id])
    assert claim is not None, f"study {study_id} has no budget left for another trial"
    study = optuna.load_study(study_name=claim.optuna_name, storage=store.db.optuna)
    trial = study.ask()
    store.runs.attach_trial(
        claim.run_id,
        trial_id=trial._trial_id,
        number=trial.number,
        params=params if params is not None else {"activation": family},
        family=family,
        config={"activation": {"family": family}},
    )
    for epoch in range(epochs):
        val = None if value is None else value * (epoch + 1) / epochs
        store.runs.report_epoch(
            claim.run_id, epoch, train_loss=1.0 / (epoch + 1), val_acc=val, img_per_s=1000.0,
            elapsed_s=float(epoch + 1),
        )  # fmt: skip
    if state == "running":
        return trial.number
    optuna_state = {
        "complete": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
    }.get(state, optuna.trial.TrialState.FAIL)
    study.tell(
        trial,
        value if optuna_state == optuna.trial.TrialState.COMPLETE else None,
        state=optuna_state,
    )
    store.runs.finish(
        claim.run_id,
        state=state,
        value=value if state == "complete" else None,
        test_acc=test_acc
        if test_acc is not None
        else (value - 0.01 if value is not None else None),
        record=record,
        failure_reason="diverged" if state == "failed" else None,
        failure_message="loss became NaN" if state == "failed" else None,
        failure_epoch=epochs - 1 if state == "failed" else None,
    )
    return trial.number


# -- a real server -----------------------------------------------------------------------------
@dataclass
class Server:
    """A uvicorn subprocess serving the app."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start_server(db_url: str, home: Path, *, env: dict[str, str] | None = None) -> Server:
    """Start `uvicorn --factory service.app:app_from_env` on a free port; wait until healthy."""
    port = free_port()
    log = home / f"uvicorn-{port}.log"
    environment = {
        **os.environ,
        "ACTSEARCH_DATABASE_URL": db_url,
        "ACTSEARCH_HOME": str(home),
        "ACTSEARCH_SESSION_SECRET": "s" * 32,
        **(env or {}),
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            uvicorn_command(port), cwd=ROOT, env=environment, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
    except RuntimeError:
        process.kill()
        raise
    return Server(url, process, log)


def stop_server(server: Server) -> None:
    """Stop the server politely, then firmly."""
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app under uvicorn in a subprocess, on the session's database."""
    running = start_server(db_url, tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def over_http(server: Server) -> Iterator[httpx.Client]:
    """An httpx client talking to the uvicorn server."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(params=["inprocess", pytest.param("uvicorn", marks=pytest.mark.slow)])
def api(request: pytest.FixtureRequest, db_url: str) -> httpx.Client:
    """The API client: the app in-process, or (for the representative subset) a uvicorn server."""
    # db_url is named here so that pytest parametrises every test using `api` over both backends.
    return request.getfixturevalue("inprocess" if request.param == "inprocess" else "over_http")  # type: ignore[no-any-return]


@pytest.fixture
def client(inprocess: TestClient) -> TestClient:
    """The in-process client (tests that need app internals or are not in the subset)."""
    return inprocess
