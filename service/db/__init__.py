"""Data layer: engine, transactions, our tables and Optuna's storage on the same database."""

from service.db.engine import (
    is_sqlite,
    is_transient,
    make_engine,
    make_sessionmaker,
    retry_transient,
    session_scope,
)
from service.db.models import Base, Epoch, Meta, Run, Study, Token, User, Worker, utcnow
from service.db.optuna_storage import optuna_storage

__all__ = [
    "Base",
    "Epoch",
    "Meta",
    "Run",
    "Study",
    "Token",
    "User",
    "Worker",
    "is_sqlite",
    "is_transient",
    "make_engine",
    "make_sessionmaker",
    "optuna_storage",
    "retry_transient",
    "session_scope",
    "utcnow",
]
