"""Fixtures for the training-engine tests: small generated datasets and the real tarball."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from worker_helpers import (
    create_pg_database,
    drop_pg_database,
    pgbouncer,
    pgbouncer_binary,
    through_pgbouncer,
)

from workers.data import DataSplits, DecodedDataset, split_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


def generated_dataset(n_train: int = 320, n_test: int = 80, classes: int = 4, seed: int = 0):
    """Learnable 32×32 images: noise plus a bright, class-specific stripe."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % classes
        images = (torch.rand(n, 3, 32, 32, generator=g) * 100).to(torch.uint8)
        for k in range(classes):
            rows = slice(4 * (k % 8), 4 * (k % 8) + 4)
            images[labels == k, k % 3, rows, :] += 140
        return images, labels

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    names = [f"class{k}" for k in range(classes)]
    return DecodedDataset(train_x, train_y, test_x, test_y, names, f"generated-{seed}")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads, and two threads crawl on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_splits() -> DataSplits:
    """256 train / 64 val / 80 test generated images in 4 classes."""
    return split_dataset(generated_dataset(), val_size=64, train_subset=None, seed=0)


@pytest.fixture(scope="session")
def micro_splits() -> DataSplits:
    """128 train / 32 val / 32 test generated images: for runs that only need to complete."""
    decoded = generated_dataset(n_train=160, n_test=32, seed=1)
    return split_dataset(decoded, val_size=32, train_subset=None, seed=0)


@pytest.fixture(scope="session")
def nano_splits() -> DataSplits:
    """32 train / 16 val / 16 test generated images: one tiny epoch per model and family."""
    decoded = generated_dataset(n_train=48, n_test=16, seed=2)
    return split_dataset(decoded, val_size=16, train_subset=None, seed=0)


@pytest.fixture(scope="session")
def cifar10_tarball() -> Path:
    """The shared CIFAR-10 JPEG tarball (env CIFAR10_JPEG_TAR, else ../shared/data)."""
    env = os.environ.get("CIFAR10_JPEG_TAR")
    for candidate in [Path(env)] if env else []:
        if candidate.exists():
            return candidate
    candidate = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.xz"
    if not candidate.exists():
        pytest.skip("CIFAR-10 JPEG tarball not found (set CIFAR10_JPEG_TAR)")
    return candidate


@pytest.fixture(scope="session")
def pgbouncer_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One PgBouncer (transaction pooling) in front of the local PostgreSQL for the session."""
    if pgbouncer_binary() is None:
        if os.environ.get("ACTSEARCH_REQUIRE_POSTGRES") == "1":  # CI: make test installs it
            pytest.fail("pgbouncer is not installed: apt-get install pgbouncer (make test does)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with pgbouncer(tmp_path_factory.mktemp("pgbouncer")) as port:
        yield port


def database_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database: "sqlite", "postgres", or "pgbouncer" (PostgreSQL behind it)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'actsearch.db'}"
        return
    made = create_pg_database()
    try:
        if kind == "pgbouncer":
            yield through_pgbouncer(made, request.getfixturevalue("pgbouncer_port"))
        else:
            yield made
    finally:
        drop_pg_database(made)


POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
PGBOUNCER = pytest.param("pgbouncer", marks=pytest.mark.postgres)


@pytest.fixture(params=["sqlite", POSTGRES])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend."""
    yield from database_url(request.param, tmp_path, request)


@pytest.fixture(params=[POSTGRES, PGBOUNCER])
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A throw-away PostgreSQL database, reached directly and through PgBouncer."""
    yield from database_url(request.param, tmp_path, request)
