"""Connections and read sessions on PostgreSQL: what a request costs in round trips.

A pooled connection is pinged only after it sat idle (service.db.engine.ping_when_idle), and a
read session runs without BEGIN/COMMIT (Database.reading, Database.read_connection); a dead
connection is still replaced before anyone sees it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, event, text

from service.db import engine as engine_module
from service.store import Store
from tests.service.conftest import PG_SERVER

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def store(pg_store: Store) -> Store:
    """A store on a PostgreSQL database of this module's own."""
    return pg_store


def _terminate(backend_pid: int) -> None:
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend_pid})
    admin.dispose()


def test_a_read_session_runs_each_statement_on_its_own(store: Store) -> None:
    """No transaction around the reads: each statement is its own (now() is its start)."""
    own = "SELECT now() = statement_timestamp()"
    with store.db.reading() as session:
        session.execute(text("SELECT pg_sleep(0.02)"))
        assert session.scalar(text(own)) is True
    with store.db.read_connection() as connection:
        connection.execute(text("SELECT pg_sleep(0.02)"))
        assert connection.scalar(text(own)) is True
    with store.db.session() as session:  # a write session keeps its one transaction
        session.execute(text("SELECT pg_sleep(0.02)"))
        assert session.scalar(text(own)) is False


@contextmanager
def one_connection_pool(monkeypatch: pytest.MonkeyPatch, ping_after_s: float) -> Iterator[Engine]:
    """An engine as make_engine builds it, with one pooled connection and a short idle time."""
    monkeypatch.setattr(engine_module, "PING_AFTER_S", ping_after_s)
    engine = engine_module.make_engine(f"{PG_SERVER}/postgres", pool_size=1, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_connection_in_use_is_not_pinged_an_idle_one_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pings: list[str] = []
    with one_connection_pool(monkeypatch, 0.3) as engine:
        original = engine.dialect.do_ping

        def counted(dbapi_connection: object) -> bool:
            pings.append("ping")
            return bool(original(dbapi_connection))

        monkeypatch.setattr(engine.dialect, "do_ping", counted)
        for _ in range(3):
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        assert pings == []  # reused at once: every statement proves it alive
        time.sleep(0.4)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert pings == ["ping"]


def test_an_idle_connection_the_server_closed_is_replaced_unseen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database restarted (here: killed our backend) while the pool held the connection."""
    connects: list[str] = []
    with one_connection_pool(monkeypatch, 0.2) as engine:
        event.listen(engine, "connect", lambda *_: connects.append("connect"))
        with engine.connect() as connection:
            backend = connection.scalar(text("SELECT pg_backend_pid()"))
        _terminate(int(backend))
        time.sleep(0.3)
        with engine.connect() as connection:  # no error: the ping found it dead
            assert connection.scalar(text("SELECT pg_backend_pid()")) != backend
        assert connects == ["connect", "connect"]
