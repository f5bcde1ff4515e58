"""The version of the code that decides what a training learns: part of every training's key.

A hash of the training engine's source files (trainer, optimiser, augmentation, data split,
models, activation modules and kernels, the contract's defaults, the registry's families), of
torch's major.minor version and of the device kind. Two trainings with the same configuration,
seed and data are the same only under the same code: a recorded result is never reused across
an edit of any of these files, another torch release, or CPU versus GPU.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Globs, relative to the repository root, of the sources a training's result depends on.
TRAINING_SOURCES = (
    "workers/train.py",
    "workers/optim.py",
    "workers/averaging.py",
    "workers/augment.py",
    "workers/sites.py",
    "workers/data.py",
    "workers/device.py",
    "workers/models/*.py",
    "search_space/build.py",
    "search_space/fits.py",
    "search_space/fit_tables.json",
    "search_space/families.py",
    "search_space/family_types.py",
    "search_space/registry.py",
    "search_space/modules/*.py",
    "search_space/kernels/*.py",
    "search_space/contract/*.py",
)


@functools.cache
def source_digest() -> str:
    """sha256 over the training sources' paths and contents (read once per process)."""
    digest = hashlib.sha256()
    for pattern in TRAINING_SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version(torch_version: str, device_kind: str) -> str:
    """The training code's version on this machine: sources, torch major.minor, device kind."""
    major_minor = ".".join(torch_version.split("+")[0].split(".")[:2])
    text = f"{source_digest()}|torch {major_minor}|{device_kind}"
    return hashlib.sha256(text.encode()).hexdigest()
