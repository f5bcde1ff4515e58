"""Optuna's RDB storage on the same database as our tables."""

from __future__ import annotations

from typing import Any

import optuna

from service.db.engine import is_sqlite


def optuna_storage(url: str, *, skip_table_creation: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's storage; Optuna creates and migrates its own tables (`studies`, `trials`, …)."""
    engine_kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        engine_kwargs["connect_args"] = {"timeout": 30}
    else:
        engine_kwargs["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs, skip_table_creation=skip_table_creation
    )


def optuna_study_name(study_id: int) -> str:
    """The Optuna study that backs our study `study_id`."""
    return f"actsearch-{study_id}"
