"""How one worker slot runs: its device, its studies, its trial limit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SlotOptions:
    """How one slot runs: which device, which studies, how many trials."""

    slot: int = 0
    device: str = "cpu"  # "cpu" or "cuda" (the one GPU this process sees)
    gpu_label: str = ""  # the physical GPU id, for the workers page
    studies: tuple[int, ...] | None = None  # only these study ids; None: every study
    max_trials: int | None = None  # exit after this many runs; None: run until stopped
    parent_pid: int | None = None  # stop when this supervisor goes away
    threads: int | None = None  # torch CPU threads

    @property
    def gpu_unusable(self) -> bool:
        """A CUDA slot whose process sees no usable CUDA device (every restart would fail alike)."""
        if self.device != "cuda":
            return False
        import torch  # only here: the options are read where torch must not be loaded yet

        try:
            return not (torch.cuda.is_available() and torch.cuda.device_count() > 0)
        except RuntimeError:  # a driver that is there but broken
            return True
