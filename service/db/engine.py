"""Engines and transactions: one context manager owns each transaction.

A PostgreSQL URL may name a transaction-pooling PgBouncer in front of the server with the flag
`?pgbouncer=true` (ACTSEARCH_DATABASE_POOLER=pgbouncer adds it). Such a pooler hands each
transaction to whichever server connection is free, so nothing may live in a server session
beyond one transaction: psycopg's automatic server-side prepared statements would be prepared on
one server connection and executed on another ("prepared statement … does not exist"), so they
are turned off (`prepare_threshold=None`). Our claim needs nothing more: its `UPDATE … RETURNING`
lock on the study row and the budget count run in one transaction, which the pooler keeps on one
server connection until it commits. The flag is removed before the URL reaches the driver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

POOLER_FLAG = "pgbouncer"  # ?pgbouncer=true: a transaction pooler sits in front of PostgreSQL


def is_sqlite(url: str) -> bool:
    """True for the embedded SQLite backend."""
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (API, dashboard) run while a worker writes; foreign keys are off by default.
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, see _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # pysqlite's own BEGIN handling is broken for SELECT-then-write; writers that must not race
    # (claims) ask for BEGIN IMMEDIATE through the execution option `sqlite_lock`.
    mode = conn.get_execution_options().get("sqlite_lock", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def behind_pooler(url: str) -> bool:
    """Whether a PostgreSQL URL says it reaches the server through a transaction pooler."""
    if is_sqlite(url):
        return False
    flag = make_url(url).query.get(POOLER_FLAG, "false")
    value = flag[-1] if isinstance(flag, tuple) else flag
    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"?{POOLER_FLAG}= takes true or false, not {value!r}")
    return value.lower() in ("true", "1", "yes")


def driver_url(url: str) -> tuple[URL, dict[str, Any]]:
    """The URL the driver is given (the pooler flag removed) and the connect args it needs."""
    parsed = make_url(url)
    if is_sqlite(url):
        return parsed, {"timeout": 30}
    pooled = behind_pooler(url)
    parsed = parsed.difference_update_query([POOLER_FLAG])
    # Transaction pooling: no server-side prepared statements (psycopg ≥ 3.1 reads it at connect).
    return parsed, ({"prepare_threshold": None} if pooled else {})


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build an engine for our tables; SQLite gets WAL and explicit transactions."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=driver_url(url)[1], **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    target, connect_args = driver_url(url)
    if connect_args:
        kwargs["connect_args"] = {**connect_args, **kwargs.get("connect_args", {})}
    engine = create_engine(target, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine, PING_AFTER_S)
    return engine


PING_AFTER_S = 1.0  # a pooled connection unused this long is pinged before it is handed out


def ping_when_idle(engine: Engine, after_s: float = PING_AFTER_S) -> None:
    """Ping a pooled connection before use only when it sat idle: SQLAlchemy's pool_pre_ping
    pings at every checkout, one round trip more for every transaction of a busy server (the
    API's conditional poll is two short reads). A connection in steady use proves itself with
    every statement; one that sat idle (the database may have restarted meanwhile) is checked,
    and a dead one replaced before anyone sees it (the pool retries on DisconnectionError)."""

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < after_s:
            return  # fresh from connect, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(str(error)) from error
        if not alive:
            raise exc.DisconnectionError("the pooled connection did not answer a ping")

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session], *, immediate: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error, always close.

    `immediate=True` takes SQLite's write lock at BEGIN, so a read-then-write (a claim) cannot
    interleave with another writer; on PostgreSQL callers use `SELECT ... FOR UPDATE` instead.
    """
    session = factory()
    if immediate and is_sqlite(str(factory.kw["bind"].url)):
        session.connection(execution_options={"sqlite_lock": "IMMEDIATE"})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
