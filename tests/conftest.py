"""Project-wide test policy: which environment-bound tests run where.

Tests marked `postgres`, `browser` or `realdata` need the local PostgreSQL, Debian's chromium
or ../shared/data/cifar10-jpg.tar.xz. On a developer's machine without them they are skipped
with the reason; CI sets ACTSEARCH_REQUIRE_*=1 so that there they fail instead of skipping.
`cuda` tests run only on a machine with a GPU.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_HOST, PG_PORT = "127.0.0.1", 5432


def shared_tarball() -> Path | None:
    """The real CIFAR-10 JPEG tarball, if this checkout has ../shared beside it."""
    env = os.environ.get("CIFAR10_JPEG_TAR")
    for candidate in ([Path(env)] if env else []) + [
        ROOT.parent / "shared/data/cifar10-jpg.tar.xz"
    ]:
        if candidate.exists():
            return candidate
    return None


def _postgres_up() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _requirement(marker: str) -> tuple[bool, str, str]:
    """(available, reason if not, env var that makes its absence a failure)."""
    if marker == "postgres":
        return _postgres_up(), f"no PostgreSQL on {PG_HOST}:{PG_PORT}", "ACTSEARCH_REQUIRE_POSTGRES"
    if marker == "browser":
        return (
            bool(shutil.which("chromium")),
            "Debian's chromium is not installed",
            "ACTSEARCH_REQUIRE_BROWSER",
        )
    if marker == "realdata":
        return (
            shared_tarball() is not None,
            "../shared/data/cifar10-jpg.tar.xz not found",
            "ACTSEARCH_REQUIRE_REALDATA",
        )
    return _cuda(), "needs a CUDA GPU (run on the device machine)", ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip (locally) or fail (CI) tests whose environment is missing."""
    cache: dict[str, tuple[bool, str, str]] = {}
    for item in items:
        for marker in ("postgres", "browser", "realdata", "cuda"):
            if marker not in item.keywords:
                continue
            if marker not in cache:
                cache[marker] = _requirement(marker)
            available, reason, require = cache[marker]
            if available:
                continue
            if require and os.environ.get(require) == "1":
                continue  # required here (CI): let it run and fail loudly
            item.add_marker(pytest.mark.skip(reason=reason))
