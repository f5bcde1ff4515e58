"""What one trial measured (TrialRecord, EpochReport) and the manifest that makes it reproducible."""

from __future__ import annotations

import functools
import importlib.metadata
import math
import platform
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from workers.device import device_name

MANIFEST_PACKAGES = ("torch", "torchvision", "optuna", "numpy")


@dataclass(frozen=True)
class EpochReport:
    """One epoch's progress, passed to on_epoch (epoch is 0-based)."""

    epoch: int
    epochs: int  # planned number of epochs
    train_loss: float  # mean training loss over the epoch's steps
    val_acc: float  # validation accuracy in [0, 1]
    img_per_s: float  # training images per second in this epoch (excluding evaluation)
    elapsed_s: float  # seconds since the trial started
    lr: float  # base learning rate at the end of the epoch

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


@dataclass
class TrialRecord:
    """Everything a finished trial measured; to_json() is what the run store keeps."""

    val_acc: float  # final validation accuracy: the objective
    best_val_acc: float
    best_epoch: int  # 0-based
    test_acc: float  # recorded, never optimised
    epochs_done: int
    train_loss: list[float]  # per epoch
    val_accs: list[float]  # per epoch
    img_per_s: float  # training images per second over the whole run
    data_s: float  # moving data to the device, normalisation statistics, data-dependent init
    train_s: float  # training steps only
    eval_s: float  # validation after every epoch plus the final test evaluation
    duration_s: float  # the whole call, model building included
    peak_memory_bytes: int
    peak_memory_kind: str  # "cuda_max_allocated" or "process_peak_rss"
    precision: str  # "bf16", "fp16" or "fp32" as actually used
    param_count: int = 0  # the model's parameters, activation parameters included
    train_steps: int = 0  # optimizer steps taken: train_s / train_steps is the mean step time
    activation_params: dict[str, Any] = field(default_factory=dict)  # {"initial":…, "final":…}
    activation_curves: dict[str, Any] = field(default_factory=dict)  # {"initial":…, "final":…}
    # What the accuracies above measured: {"weights": "raw" | "ema", "tta": "none" | "flip"}.
    # With "ema", the final activation parameters and curves are the averaged ones too.
    evaluation: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible dict (non-finite floats become None)."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return _json_safe(value.tolist())
    return value


def build_manifest(
    config: dict[str, Any],
    device: torch.device,
    checksum: str,
    seed: int,
    resolved_training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Code, library, machine and data versions that produced a result.

    resolved_training is the "training" part as the trainer ran it, every default filled in
    (config is kept exactly as given).
    """
    cuda = device.type == "cuda"
    manifest = {
        "git_sha": git_sha(),
        "packages": package_versions(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": str(device),
        "gpu": device_name(device) if cuda else None,
        "seed": seed,
        "data_checksum": checksum,
        "config": config,
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if resolved_training is not None:
        manifest["resolved_training"] = resolved_training
    return manifest


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide numerics."""
    versions: dict[str, str | None] = {}
    for name in MANIFEST_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The checkout's commit (suffixed "+dirty" with local changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = _git(here, "rev-parse", "HEAD")
        dirty = _git(here, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()
