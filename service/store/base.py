"""The store: our tables and Optuna's storage behind one object, built by a factory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import optuna
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.db import is_sqlite, make_engine, make_sessionmaker, optuna_storage, session_scope
from service.migrate import check_schema


class StoreError(Exception):
    """Base of the data layer's domain errors."""


class NotFound(StoreError):
    """The named object does not exist."""


class Conflict(StoreError):
    """The request contradicts the object's current state (e.g. resuming a finished study)."""


@dataclass
class Database:
    """Engine, sessions and (lazily) Optuna's storage for one database URL."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    _optuna: optuna.storages.RDBStorage | None = field(default=None, repr=False)

    @classmethod
    def open(cls, url: str, *, check: bool = True) -> Database:
        """Connect lazily; with check=True refuse a schema other than the code's head."""
        engine = make_engine(url)
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

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """One transaction (see service.db.session_scope)."""
        with session_scope(self.sessions, immediate=immediate) as session:
            yield session

    def dispose(self) -> None:
        """Close pooled connections (ours and Optuna's)."""
        self.engine.dispose()
        if self._optuna is not None:
            self._optuna.engine.dispose()
