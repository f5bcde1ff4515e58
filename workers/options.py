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
