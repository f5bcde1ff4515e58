"""Database outages versus database bugs: which errors to wait out and which to raise at once.

An outage is the database being away for a while: a refused or lost connection, a server that
shuts down, restarts or has no connection slot left, a SQLite file another process holds locked,
or a transaction the server aborted so that it can be tried again (serialization failure,
deadlock, lock timeout). Waiting fixes it, so workers retry with back-off and the API answers
503 with `Retry-After`. Anything else the database says (no such table or column, a syntax
error, a constraint, a missing permission, a read-only or damaged file) stays wrong however long
one waits: it is raised at once, for a person to fix.

Errors are classified by type and SQLSTATE (PostgreSQL) or SQLite's result code, never by class
name; the whole cause chain is inspected, because Optuna wraps driver errors in its own.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias, TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")

# PostgreSQL SQLSTATEs of an outage: class 08 (connection exception) as a whole, then single codes.
OUTAGE_SQLSTATE_CLASSES = ("08",)
OUTAGE_SQLSTATES = {
    "57P01": "admin shutdown",
    "57P02": "crash shutdown",
    "57P03": "cannot connect now (starting up or shutting down)",
    "53300": "too many connections",
    "40001": "serialization failure (retry the transaction)",
    "40P01": "deadlock detected (retry the transaction)",
    "55P03": "lock not available",
}
# SQLite primary result codes of an outage (an extended code's low byte is its primary code).
SQLITE_OUTAGE_CODES = {
    5: "SQLITE_BUSY (database is locked)",
    6: "SQLITE_LOCKED (a table is locked)",
    10: "SQLITE_IOERR (disk I/O error)",
    14: "SQLITE_CANTOPEN (unable to open database file)",
}
# The same, by message, for a sqlite3 that does not expose result codes (Python < 3.11).
SQLITE_OUTAGE_MESSAGES = (
    "database is locked",
    "database table is locked",
    "database schema is locked",
    "unable to open database file",
    "disk i/o error",
)

StopEvents: TypeAlias = threading.Event | Sequence[threading.Event] | None


class DatabaseWaitStopped(BaseException):
    """A stop event ended a wait for the database; `error` is the outage that was waited out.

    A BaseException, like asyncio.CancelledError: `except Exception` handlers that would file
    the outage as a trial's or a study's failure let it through to the loop that asked to stop.
    """

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"stopped while waiting to {what} ({describe_db_error(error)})")
        self.what = what
        self.error = error


def _sqlite_outage(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in SQLITE_OUTAGE_CODES
    message = str(error).lower()
    return any(marker in message for marker in SQLITE_OUTAGE_MESSAGES)


def _sqlstate(error: BaseException) -> str | None:
    # psycopg 3 names it `sqlstate`, psycopg2 `pgcode`; None: no server answer (connect failed).
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return state if isinstance(state, str) and state else None


def _driver_verdict(error: BaseException, *, operational: bool) -> bool:
    """Whether a driver (DB-API) error is an outage; `operational`: it is an OperationalError."""
    if isinstance(error, sqlite3.Error):
        return _sqlite_outage(error)
    state = _sqlstate(error)
    if state is not None:
        return state in OUTAGE_SQLSTATES or state[:2] in OUTAGE_SQLSTATE_CLASSES
    # An OperationalError the server never answered (refused, reset, timed out): the connection.
    return operational


def _verdict(error: BaseException) -> bool | None:
    """True: an outage; False: a database error waiting cannot fix; None: not a database error."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        operational = isinstance(error, OperationalError)
        return (
            operational
            if error.orig is None
            else _driver_verdict(error.orig, operational=operational)
        )
    if isinstance(error, (PoolTimeout, DisconnectionError)):
        return True  # no pooled connection became free in time / a pooled one was found dead
    if isinstance(error, (sqlite3.Error, psycopg.Error)):  # a driver error SQLAlchemy did not wrap
        operational = isinstance(error, (sqlite3.OperationalError, psycopg.OperationalError))
        return _driver_verdict(error, operational=operational)
    return None


def _database_verdict(error: BaseException) -> bool | None:
    """The verdict of the first database error along the cause chain (None: there is none)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdict = _verdict(current)
        if verdict is not None:
            return verdict
        current = current.__cause__ or current.__context__
    return None


def is_db_outage(error: BaseException) -> bool:
    """Whether an error (or what caused it) is the database being away: worth waiting out."""
    return _database_verdict(error) is True


def is_permanent_db_error(error: BaseException) -> bool:
    """Whether an error (or what caused it) is a database error that waiting cannot fix."""
    return _database_verdict(error) is False


def describe_db_error(error: BaseException) -> str:
    """The first line of the innermost message: short enough for a warning."""
    inner: BaseException = error
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0] if text else ''}"


def _events(stop: StopEvents) -> tuple[threading.Event, ...]:
    if stop is None:
        return ()
    if isinstance(stop, threading.Event):
        return (stop,)
    return tuple(stop)


def _wait(events: tuple[threading.Event, ...], delay: float) -> bool:
    """Sleep `delay` seconds; True as soon as one of `events` is set."""
    if not events:
        time.sleep(delay)
        return False
    if len(events) == 1:
        return events[0].wait(delay)
    deadline = time.monotonic() + delay
    while not any(event.is_set() for event in events):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        events[0].wait(min(left, 0.1))  # threading has no wait-for-any: poll the others
    return True


def db_retry(
    fn: Callable[[], T],
    what: str,
    *,
    attempts: int = 0,
    stop: StopEvents = None,
    base_s: float = 0.5,
    max_s: float = 10.0,
) -> T:
    """fn(), retried with back-off while the database is unreachable (attempts=0: forever).

    Any other error, a permanent database error included, is raised at once; so is the last
    outage when `attempts` are used up. `stop` (an event or several): once one is set the
    waiting ends with DatabaseWaitStopped, for waits a signal may abandon.
    """
    events = _events(stop)
    delay, tries = base_s, 0
    while True:
        try:
            return fn()
        except Exception as error:
            tries += 1
            if not is_db_outage(error) or (attempts and tries >= attempts):
                raise
            if any(event.is_set() for event in events):
                raise DatabaseWaitStopped(what, error) from error
            log.warning(
                "database unreachable while trying to %s (%s); retrying in %.1f s",
                what,
                describe_db_error(error),
                delay,
            )
            if _wait(events, delay):
                raise DatabaseWaitStopped(what, error) from error
            delay = min(max_s, delay * 2)
