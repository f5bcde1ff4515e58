"""PostgreSQL through a transaction-pooling PgBouncer: our tables, Optuna's, and the settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import PGBOUNCER, database_url
from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from worker_helpers import (
    PG_HOST,
    PG_SERVER,
    PGBOUNCER_POOL_SIZE,
    REPO_ROOT,
    create_pg_database,
    drop_pg_database,
    free_port,
    listening,
    make_user,
    open_store,
    tiny_spec,
    wait_for,
)

from service.db import optuna_storage
from service.db.engine import behind_pooler, driver_url
from service.settings import Settings
from service.store import Store
from workers.worker import open_worker_store


@pytest.fixture(params=[PGBOUNCER])
def pooled_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database reached through the session's PgBouncer."""
    yield from database_url(request.param, tmp_path, request)


def test_the_pooler_setting_flags_the_url_once() -> None:
    direct = "postgresql+psycopg://u@pooler:6432/db"
    settings = Settings(database_url=direct, database_pooler="pgbouncer")
    assert settings.resolved_database_url == f"{direct}?pgbouncer=true"
    with_query = Settings(database_url=f"{direct}?application_name=w", database_pooler="pgbouncer")
    assert with_query.resolved_database_url == f"{direct}?application_name=w&pgbouncer=true"
    flagged = Settings(database_url=f"{direct}?pgbouncer=true", database_pooler="pgbouncer")
    assert flagged.resolved_database_url == f"{direct}?pgbouncer=true"  # a slot's inherited URL
    assert Settings(database_url=direct).resolved_database_url == direct


def test_the_pooler_setting_needs_a_postgresql_url() -> None:
    with pytest.raises(ValidationError, match="needs a postgresql"):
        Settings(database_pooler="pgbouncer")  # the embedded SQLite file


def test_the_flag_turns_prepared_statements_off_and_never_reaches_the_driver() -> None:
    url = "postgresql+psycopg://u@pooler:6432/db?application_name=w&pgbouncer=true"
    target, connect_args = driver_url(url)
    assert connect_args == {"prepare_threshold": None}
    assert dict(target.query) == {"application_name": "w"}
    assert driver_url("postgresql+psycopg://u@h/db") == (
        make_url("postgresql+psycopg://u@h/db"),
        {},
    )
    assert not behind_pooler("postgresql+psycopg://u@h/db?pgbouncer=false")
    with pytest.raises(ValueError, match="true or false"):
        behind_pooler("postgresql+psycopg://u@h/db?pgbouncer=maybe")


@pytest.mark.postgres
def test_optuna_storage_works_through_the_pooler(pooled_url: str) -> None:
    # More asks and tells than psycopg's prepare threshold (5): with prepared statements on, a
    # statement prepared on one server connection is soon run on another, and fails.
    storages = [optuna_storage(pooled_url) for _ in range(2)]
    study = optuna.create_study(storage=storages[0], direction="maximize")
    other = optuna.load_study(study_name=study.study_name, storage=storages[1])
    for index in range(12):
        trial = (study, other)[index % 2].ask()
        value = trial.suggest_float("x", 0.0, 1.0)
        trial.report(value, 0)
        (study, other)[index % 2].tell(trial, value)
    states = [
        t.state for t in optuna.load_study(study_name=study.study_name, storage=storages[0]).trials
    ]
    assert states == [TrialState.COMPLETE] * 12
    for storage in storages:
        storage.engine.dispose()


def _server_connections(database: str) -> int:
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            count = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                {"name": database},
            ).scalar()
    finally:
        admin.dispose()
    return int(count or 0)


def _pooled(store: Store) -> int:
    """Client connections a store's pool holds open (to PgBouncer)."""
    pool: Any = store.db.engine.pool
    return int(pool.checkedin() + pool.checkedout())


@pytest.mark.postgres
def test_many_worker_connections_share_a_few_server_connections(pooled_url: str) -> None:
    store = open_store(pooled_url)
    n_trials, racers = 40, 8
    study, _ = store.studies.create(
        make_user(store), tiny_spec(Path("/nowhere"), n_trials=n_trials)
    )
    database = make_url(pooled_url).database
    assert database is not None
    workers = [open_worker_store(pooled_url) for _ in range(racers)]
    claimed: list[int] = []
    errors: list[BaseException] = []
    peak = 0
    done = threading.Event()

    def race(mine: Store) -> None:
        runs = mine.runs
        try:
            while (claim := runs.claim_next("w")) is not None:
                claimed.append(claim.run_id)
                runs.report_epoch(
                    claim.run_id, 0, train_loss=1.0, val_acc=0.5, img_per_s=1.0, elapsed_s=0.1
                )
                runs.finish(claim.run_id, state="complete", value=0.5)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=race, args=(mine,)) for mine in workers]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, _server_connections(database))
        done.wait(0.05)
    clients = sum(_pooled(mine) for mine in workers)
    for mine in workers:
        mine.dispose()
    assert not errors, errors
    assert len(claimed) == len(set(claimed)) == n_trials
    assert store.studies.get(study.id).status == "completed"
    # Each racer kept its own client connections open; the server saw at most the pool.
    assert clients >= racers > PGBOUNCER_POOL_SIZE
    assert 1 <= peak <= PGBOUNCER_POOL_SIZE
    store.dispose()


@pytest.mark.postgres
def test_the_compose_pgbouncer_serves_workers_with_their_compose_settings(tmp_path: Path) -> None:
    """deploy/pgbouncer's entrypoint, run here as its image runs it, with docker-compose.yml's
    worker settings pointed at it: a password is checked, and the worker store works."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    worker_env = compose["services"]["worker"]["environment"]
    assert worker_env["ACTSEARCH_DATABASE_POOLER"] == "pgbouncer"
    assert "@pgbouncer:6432/" in worker_env["ACTSEARCH_DATABASE_URL"]
    assert compose["services"]["pgbouncer"]["build"] == "deploy/pgbouncer"
    direct = create_pg_database()
    # The image's user (postgres) writes its configuration here: outside pytest's private tmp.
    workdir = Path(tempfile.mkdtemp(prefix="as-pgbouncer-"))
    workdir.chmod(0o777)
    log = tmp_path / "pgbouncer.log"
    port = free_port()
    env = {
        **os.environ,
        "DB_HOST": PG_HOST,
        "DB_USER": "postgres",
        "DB_PASSWORD": "s3cret",
        "LISTEN_PORT": str(port),
        "PGBOUNCER_DIR": str(workdir),
        "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin",
    }
    command = ["sh", str(REPO_ROOT / "deploy" / "pgbouncer" / "entrypoint.sh")]
    if os.geteuid() == 0:  # as in the image: pgbouncer refuses to run as root
        command = ["runuser", "-u", "postgres", "--", *command]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: listening(port) or process.poll() is not None, 30, "pgbouncer")
        assert process.poll() is None, log.read_text()
        settings = Settings(
            database_url=make_url(direct)
            .set(password="s3cret", port=port)
            .render_as_string(hide_password=False),
            database_pooler=worker_env["ACTSEARCH_DATABASE_POOLER"],
        )
        store = open_store(settings.resolved_database_url)
        study, _ = store.studies.create(make_user(store), tiny_spec(Path("/nowhere"), n_trials=8))
        worker = open_worker_store(settings.resolved_database_url)
        while (claim := worker.runs.claim_next("w")) is not None:
            worker.runs.finish(claim.run_id, state="complete", value=0.5)
        assert store.studies.get(study.id).status == "completed"
        worker.dispose()
        store.dispose()
        wrong = make_url(settings.resolved_database_url).set(password="wrong")
        with pytest.raises(OperationalError, match="authentication failed"):
            open_worker_store(wrong.render_as_string(hide_password=False))
    finally:
        process.terminate()
        process.wait(timeout=30)
        drop_pg_database(direct)
        shutil.rmtree(workdir, ignore_errors=True)
