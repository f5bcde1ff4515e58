"""Optuna's private names this package uses, imported in one place (None where missing)."""

from __future__ import annotations

try:
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
    from optuna.storages._rdb import models as _models
    from optuna.storages._rdb.storage import _create_scoped_session
except ImportError:  # pragma: no cover - depends on the installed Optuna
    _CachedStorage = None  # type: ignore[assignment,misc]
    _StudyInfo = None  # type: ignore[assignment,misc]
    _models = None  # type: ignore[assignment]
    _create_scoped_session = None  # type: ignore[assignment]
try:  # Study.tell's body; see tell_without_reread
    from optuna.study._tell import _tell_with_warning
except ImportError:  # pragma: no cover - depends on the installed Optuna
    _tell_with_warning = None  # type: ignore[assignment]

__all__ = [
    "_CachedStorage",
    "_StudyInfo",
    "_create_scoped_session",
    "_models",
    "_tell_with_warning",
]
