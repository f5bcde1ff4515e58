"""Outage or bug: real SQLite and PostgreSQL errors classified, and db_retry waiting only on outages.

An outage (refused or lost connection, a locked SQLite file, a transaction the server aborted
for a retry) is waited out; a permanent error (no such table, a constraint, a read-only or
damaged file) is raised at once, so that a worker stops and the API answers 500 instead of 503.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from service.db import DatabaseWaitStopped, db_retry, is_db_outage, is_permanent_db_error
from tests.service.conftest import PG_SERVER, create_pg_database, drop_pg_database

CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def error_of(fn: Callable[[], Any]) -> BaseException:
    """The exception fn() raises (fails the test when it raises none)."""
    try:
        fn()
    except Exception as error:
        return error
    raise AssertionError("expected an error")


def assert_outage(error: BaseException) -> None:
    assert is_db_outage(error), repr(error)
    assert not is_permanent_db_error(error), repr(error)


def assert_permanent(error: BaseException) -> None:
    assert is_permanent_db_error(error), repr(error)
    assert not is_db_outage(error), repr(error)


class Calls:
    """fn for db_retry: raises the given errors in turn, then returns "done"; counts calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


# -- SQLite ---------------------------------------------------------------------------------
@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite file with one table `t` holding one row."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    yield engine
    engine.dispose()


def test_sqlite_dropped_table_is_permanent(sqlite_engine: Engine) -> None:
    with sqlite_engine.begin() as connection:
        connection.execute(text("DROP TABLE t"))

    def query() -> Any:
        with sqlite_engine.connect() as connection:
            return connection.execute(text("SELECT x FROM t")).all()

    error = error_of(query)
    assert "no such table" in str(error)
    assert_permanent(error)
    calls = Calls()
    with pytest.raises(type(error), match="no such table"):
        db_retry(lambda: (calls(), query()), "read t", base_s=0.01)
    assert calls.count == 1  # raised at once, not retried


def test_sqlite_missing_column_constraint_and_read_only_are_permanent(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    with sqlite_engine.connect() as connection:
        assert_permanent(error_of(lambda: connection.execute(text("SELECT nope FROM t"))))
    with sqlite_engine.connect() as connection:
        assert_permanent(error_of(lambda: connection.execute(text("INSERT INTO t VALUES (1)"))))
    read_only = create_engine(f"sqlite:///file:{tmp_path / 'db.sqlite'}?mode=ro&uri=true")
    try:
        with read_only.connect() as connection:
            error = error_of(lambda: connection.execute(text("INSERT INTO t VALUES (2)")))
        assert "readonly" in str(error)
        assert_permanent(error)
    finally:
        read_only.dispose()


def test_sqlite_damaged_file_is_permanent(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"this is not a database" * 200)
    engine = create_engine(f"sqlite:///{damaged}")
    try:
        with engine.connect() as connection:
            error = error_of(lambda: connection.execute(text("SELECT * FROM sqlite_master")))
        assert "not a database" in str(error)
        assert_permanent(error)
    finally:
        engine.dispose()


def test_sqlite_locked_and_unopenable_are_outages(sqlite_engine: Engine, tmp_path: Path) -> None:
    holder = sqlite3.connect(str(tmp_path / "db.sqlite"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    impatient = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", connect_args={"timeout": 0.05})
    try:
        with impatient.connect() as connection:
            error = error_of(lambda: connection.execute(text("SELECT x FROM t")))
        assert "locked" in str(error)
        assert_outage(error)
    finally:
        holder.rollback()
        holder.close()
        impatient.dispose()
    nowhere = create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'db.sqlite'}")
    error = error_of(nowhere.connect)
    assert "unable to open database file" in str(error)
    assert_outage(error)


def test_errors_that_are_not_database_errors_are_neither() -> None:
    for error in (ValueError("no such table"), RuntimeError("database is locked")):
        assert not is_db_outage(error) and not is_permanent_db_error(error)
    calls = Calls(ValueError("a bug"))
    with pytest.raises(ValueError):
        db_retry(calls, "compute", base_s=0.01)
    assert calls.count == 1


# -- PostgreSQL -----------------------------------------------------------------------------
@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throw-away database with a table `t` holding one row."""
    url = create_pg_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY, y INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1, 0)"))
    engine.dispose()
    yield url
    drop_pg_database(url)


@pytest.mark.postgres
def test_postgres_refused_connection_is_an_outage() -> None:
    engine = create_engine(CLOSED_PORT_URL)
    try:
        error = error_of(engine.connect)
    finally:
        engine.dispose()
    assert "refused" in str(error)
    assert_outage(error)
    # Optuna and our own code wrap driver errors: the cause chain decides.
    try:
        raise RuntimeError("storage failed") from error
    except RuntimeError as wrapped:
        assert_outage(wrapped)


@pytest.mark.postgres
def test_postgres_terminated_backend_is_an_outage(pg_url: str) -> None:
    engine = create_engine(pg_url)
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            error = error_of(lambda: connection.execute(text("SELECT 1")))
        assert "terminating connection" in str(error)
        assert_outage(error)
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.postgres
def test_postgres_missing_table_and_constraint_are_permanent(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as connection:
            error = error_of(lambda: connection.execute(text("SELECT * FROM no_such_table")))
        assert "does not exist" in str(error)
        assert_permanent(error)
        with engine.connect() as connection:
            error = error_of(lambda: connection.execute(text("INSERT INTO t VALUES (1, 0)")))
        assert "duplicate key" in str(error)
        assert_permanent(error)
        calls = Calls()

        def query() -> Any:
            calls()
            with engine.connect() as connection:
                return connection.execute(text("SELECT * FROM no_such_table")).all()

        with pytest.raises(Exception, match="does not exist"):
            db_retry(query, "read", base_s=0.01)
        assert calls.count == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_conflicts_worth_a_retry_are_outages(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        # 40001: a repeatable-read transaction updates a row changed since its snapshot.
        with engine.connect() as first, engine.connect() as second:
            first.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            first.execute(text("SELECT y FROM t")).all()
            second.execute(text("UPDATE t SET y = 1"))
            second.commit()
            error = error_of(lambda: first.execute(text("UPDATE t SET y = 2")))
        assert "could not serialize" in str(error)
        assert_outage(error)
        # 55P03: NOWAIT on a row another transaction holds.
        with engine.connect() as first, engine.connect() as second:
            first.execute(text("SELECT y FROM t FOR UPDATE")).all()
            error = error_of(lambda: second.execute(text("SELECT y FROM t FOR UPDATE NOWAIT")))
        assert "could not obtain lock" in str(error)
        assert_outage(error)
    finally:
        engine.dispose()


# -- db_retry -------------------------------------------------------------------------------
def refused() -> BaseException:
    """A real refused connection (PostgreSQL's driver needs no server to fail this way)."""
    engine = create_engine(CLOSED_PORT_URL)
    try:
        return error_of(engine.connect)
    finally:
        engine.dispose()


def test_db_retry_waits_out_outages_and_gives_up_after_attempts() -> None:
    calls = Calls(refused(), refused())
    assert db_retry(calls, "connect", base_s=0.01) == "done"
    assert calls.count == 3
    calls = Calls(refused(), refused(), refused())
    with pytest.raises(Exception, match="refused"):
        db_retry(calls, "connect", attempts=2, base_s=0.01)
    assert calls.count == 2


@pytest.mark.parametrize("which", [0, 1], ids=["first-event", "second-event"])
def test_a_set_stop_event_ends_the_wait(which: int) -> None:
    events = [threading.Event(), threading.Event()]
    outage = refused()
    calls = Calls(*[outage] * 100)
    threading.Timer(0.3, events[which].set).start()
    started = time.monotonic()
    with pytest.raises(DatabaseWaitStopped) as stopped:
        db_retry(calls, "store the result", stop=events, base_s=30.0)
    assert time.monotonic() - started < 5  # not the 30 s back-off
    assert calls.count == 1
    assert stopped.value.error is outage and "store the result" in str(stopped.value)
    # A stop that is already set: one try, then no wait at all.
    calls = Calls(outage)
    with pytest.raises(DatabaseWaitStopped):
        db_retry(calls, "connect", stop=events[which], base_s=30.0)
    assert calls.count == 1
    assert db_retry(Calls(), "connect", stop=events[which]) == "done"


def test_a_stop_passes_through_except_exception() -> None:
    """What lets a stopped wait reach the worker loop through the run executor's handlers."""
    stop = threading.Event()
    stop.set()
    reached = []
    with pytest.raises(DatabaseWaitStopped):
        try:
            db_retry(Calls(refused()), "connect", stop=stop)
        except Exception:  # e.g. "Optuna could not create a trial": must not see a stop
            reached.append("handler")
    assert reached == []
