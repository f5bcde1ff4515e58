"""Optuna's RDB storage on the same database as our tables."""

from __future__ import annotations

from typing import Any

import optuna

from service.db.engine import PING_AFTER_S, driver_url, is_sqlite, ping_when_idle


def optuna_storage(
    url: str, *, skip_table_creation: bool = False, engine_kwargs: dict[str, Any] | None = None
) -> optuna.storages.RDBStorage:
    """Optuna's storage; Optuna creates and migrates its own tables (`studies`, `trials`, …).

    Behind a transaction pooler (`?pgbouncer=true`, see service.db.engine) its engine gets the
    same connect args as ours: no server-side prepared statements. Its pooled connections are
    pinged as ours are (`ping_when_idle`: only after sitting idle), not at every checkout with
    `pool_pre_ping`: a worker's trial opens some ten Optuna transactions, and a ping each was
    ten round trips more than plain Optuna pays.
    """
    kwargs: dict[str, Any] = dict(engine_kwargs or {})
    target, connect_args = driver_url(url)
    if connect_args:
        kwargs["connect_args"] = {**connect_args, **kwargs.get("connect_args", {})}
    storage = optuna.storages.RDBStorage(
        target.render_as_string(hide_password=False),
        engine_kwargs=kwargs,
        skip_table_creation=skip_table_creation,
    )
    if not is_sqlite(url) and not kwargs.get("pool_pre_ping"):
        ping_when_idle(storage.engine, PING_AFTER_S)
    return storage


def optuna_study_name(study_id: int) -> str:
    """The Optuna study that backs our study `study_id`."""
    return f"actsearch-{study_id}"
