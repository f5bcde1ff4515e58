"""A worker and the database: a permanent error stops it at once; SIGTERM ends a wait for it.

Real worker processes (and, for the wait before training, the real run executor in-process) on
SQLite and PostgreSQL; PostgreSQL is taken away from the worker alone by stopping a TCP proxy
its URL goes through (tests/service/db_proxy.py).
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_helpers import (
    create_pg_database,
    drop_pg_database,
    log_text,
    make_image_folder,
    make_user,
    open_store,
    runs_of,
    tiny_spec,
    wait_for,
    worker_env,
    worker_processes,
)

from service.db import DatabaseWaitStopped
from service.settings import Settings
from service.store import Store
from tests.service.db_proxy import TcpProxy
from workers.options import SlotOptions
from workers.supervisor import EXIT_FATAL
from workers.torch_training import TorchTraining
from workers.trial_runner import TrialRunner
from workers.worker import open_worker_store

pytestmark = pytest.mark.timeout(300)

STOP_BOUND_S = 20.0  # "a few seconds", with room for a loaded 2-core machine


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image folder shared by this module's studies."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture
def proxied_pg(tmp_path: Path) -> Iterator[tuple[str, TcpProxy]]:
    """A fresh PostgreSQL database (its direct URL) and a started proxy to it."""
    url = create_pg_database()
    proxy = TcpProxy()
    proxy.start()
    try:
        yield url, proxy
    finally:
        proxy.stop()
        drop_pg_database(url)


def _through(proxy: TcpProxy, url: str) -> str:
    return proxy.url(url.rsplit("/", 1)[1])


def test_a_table_dropped_under_a_running_worker_stops_it_saying_what_is_wrong(
    tmp_path: Path,
) -> None:
    path = tmp_path / "actsearch.db"
    open_store(f"sqlite:///{path}").dispose()
    log = tmp_path / "worker.log"
    env = worker_env(f"sqlite:///{path}", tmp_path)
    with worker_processes(["--gpus", "cpu"], env, log) as process:
        wait_for(lambda: "ready on cpu" in log_text(log), 120, "the slot to be ready")
        with sqlite3.connect(path) as connection:  # what a mistaken hand or a bad restore does
            connection.execute("DROP TABLE as_studies")
        try:
            code = process.wait(timeout=STOP_BOUND_S)
        except Exception:
            raise AssertionError(log_text(log)[-4000:]) from None
    text = log_text(log)
    assert code == EXIT_FATAL, text[-4000:]  # the supervisor does not restart it either
    assert "no such table: as_studies" in text and "retrying cannot fix it" in text, text[-4000:]
    assert "database unreachable" not in text and "restarting in" not in text, text[-4000:]


@pytest.mark.postgres
def test_a_stop_ends_the_wait_for_the_database_before_training(
    tmp_path: Path, folder: Path, proxied_pg: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_pg
    owner = open_store(url)
    owner.studies.create(make_user(owner), tiny_spec(folder, n_trials=1))
    store: Store = open_worker_store(_through(proxy, url))
    settings = Settings(home=tmp_path)
    runner = TrialRunner(
        store=store,
        settings=settings,
        worker_id="w-outage",
        training=TorchTraining(settings, SlotOptions(threads=1)),
    )
    store.workers.register("w-outage", hostname="test", pid=1, device="cpu")
    claim = store.runs.claim_next("w-outage")
    assert claim is not None
    proxy.stop()  # the database goes away between the claim and the Optuna trial
    raised: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(claim)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    try:
        thread.start()
        thread.join(timeout=3)
        assert thread.is_alive()  # waiting for the database, as it should
        runner.stopping.set()  # the first SIGTERM
        stopped_at = time.monotonic()
        thread.join(timeout=STOP_BOUND_S)
        assert not thread.is_alive(), "the run executor ignored the stop while waiting"
        assert time.monotonic() - stopped_at < STOP_BOUND_S
        (error,) = raised
        assert isinstance(error, DatabaseWaitStopped), repr(error)
        assert error.what == "load the Optuna study"
        # Nothing was filed as the study's fault: it waits for a worker that can reach it.
        assert owner.studies.get(claim.study_id).status != "failed"
    finally:
        runner.aborting.set()
        store.dispose()
        owner.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_second_sigterm_ends_the_wait_to_store_results(
    tmp_path: Path, folder: Path, proxied_pg: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_pg
    store = open_store(url)
    study, _ = store.studies.create(make_user(store), tiny_spec(folder, n_trials=1, epochs=500))
    log = tmp_path / "worker.log"
    env = worker_env(_through(proxy, url), tmp_path)
    try:
        with worker_processes(["--gpus", "cpu"], env, log) as process:
            wait_for(lambda: any(r.epochs_done >= 1 for r in runs_of(store, study.id)), 240, "1")
            proxy.stop()
            process.send_signal(signal.SIGTERM)  # finish the epoch, hand the run back...
            wait_for(  # ...which needs the database: the slot waits for it
                lambda: "while trying to store an epoch" in log_text(log), 60, "a wait"
            )
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)  # stop now
            try:
                code = process.wait(timeout=STOP_BOUND_S)
            except Exception:
                raise AssertionError(log_text(log)[-4000:]) from None
        text = log_text(log)
        assert code == 0, text[-4000:]
        assert "stopped while waiting for the database to store an epoch" in text, text[-4000:]
        assert "Traceback" not in text, text[-4000:]
    finally:
        store.dispose()
