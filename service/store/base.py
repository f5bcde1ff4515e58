"""The store: our tables and Optuna's storage behind one object, built by a factory."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import (
    is_sqlite,
    make_engine,
    make_sessionmaker,
    optuna_storage,
    session_scope,
    utcnow,
)
from service.migrate import check_schema


class StoreError(Exception):
    """Base of the data layer's domain errors."""


class NotFound(StoreError):
    """The named object does not exist."""


class Conflict(StoreError):
    """The request contradicts the object's current state (e.g. resuming a finished study)."""


class ByVersion:
    """What was read from a study's rows, kept under the study's change counter.

    as_studies.version is bumped by the database in the transaction of every write a read of the
    study shows (migrations 0008, 0010), so a value read after seeing version N holds for N:
    a list of big studies recounts only the one that changed. Bounded, oldest out first."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._values: OrderedDict[tuple[str, int, int], Any] = OrderedDict()

    def get(self, kind: str, study_id: int, version: int) -> Any:
        """The value of `kind` kept for the study at `version`, or MISSING."""
        with self._lock:
            return self._values.get((kind, study_id, version), MISSING)

    def put(self, kind: str, study_id: int, version: int, value: Any) -> None:
        """Keep a value read after seeing `version`."""
        with self._lock:
            self._values[(kind, study_id, version)] = value
            while len(self._values) > self.max_entries:
                self._values.popitem(last=False)


MISSING = object()  # ByVersion.get: nothing kept (None is a value: a study without a best trial)


@dataclass
class Database:
    """Engine, sessions and (lazily) Optuna's storage for one database URL."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    _optuna: optuna.storages.RDBStorage | None = field(default=None, repr=False)
    _reads: sessionmaker[Session] | None = field(default=None, repr=False)
    _autocommit: Engine | None = field(default=None, repr=False)
    by_version: ByVersion = field(default_factory=ByVersion, repr=False)
    # What a process keeps of the database for reads (service.store.queries.board_facts).
    caches: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, url: str, *, check: bool = True, **engine_options: Any) -> Database:
        """Connect lazily; with check=True refuse a schema other than the code's head.
        `engine_options` go to the engine (e.g. the API's pool size)."""
        engine = make_engine(url, **engine_options)
        if check:
            check_schema(engine)
        return cls(url=url, engine=engine, sessions=make_sessionmaker(engine))

    @property
    def sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return is_sqlite(self.url)

    @property
    def optuna(self) -> optuna.storages.RDBStorage:
        """Optuna's RDB storage on this database, created on first use."""
        if self._optuna is None:
            self._optuna = optuna_storage(self.url)
        return self._optuna

    def clock(self) -> Any:
        """ "Now" for heartbeats, as a value to write or compare: the database's clock.

        Heartbeats are written by workers on many machines and judged by whichever process
        reaps; with their own clocks, a worker whose clock ran a grace period behind would be
        reaped while alive. PostgreSQL's now() is one clock for all of them. The embedded SQLite
        database lives on one machine, whose clock every process there already shares.
        """
        return utcnow() if self.sqlite else func.now()

    def silent_since(self, seconds: float) -> Any:
        """The heartbeat cutoff: the database's clock minus `seconds`."""
        return self.clock() - timedelta(seconds=seconds)

    def now(self, session: Session) -> datetime:
        """The database's clock, read (one round trip on PostgreSQL)."""
        if self.sqlite:
            return utcnow()
        moment = session.scalar(select(func.now()))
        assert moment is not None
        return moment

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """One transaction (see service.db.session_scope)."""
        with session_scope(self.sessions, immediate=immediate) as session:
            yield session

    def _read_engine(self) -> Engine:
        """The engine reads go through: on PostgreSQL in autocommit (no BEGIN and COMMIT round
        trips; under READ COMMITTED every statement reads its own snapshot either way), made once
        and sharing the pool. SQLite keeps its transactions (nothing crosses a network there)."""
        if self.sqlite:
            return self.engine
        if self._autocommit is None:
            self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        return self._autocommit

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only (the read model's pages): on PostgreSQL one round trip per
        statement (`_read_engine`). A write in it commits statement by statement: use
        `session()` for writes."""
        if self._reads is None:
            self._reads = make_sessionmaker(self._read_engine())
        with session_scope(self._reads) as session:
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A connection for one or two Core statements of a read on every request (the token
        check, an ETag): as `reading()` without the ORM session's work."""
        with self._read_engine().begin() as connection:
            yield connection

    def dispose(self) -> None:
        """Close pooled connections (ours and Optuna's)."""
        self.engine.dispose()
        if self._optuna is not None:
            self._optuna.engine.dispose()
