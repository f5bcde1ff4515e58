"""The worker supervisor: one OS process per slot, pinned to its GPU, restarted if it dies.

The supervisor itself never imports torch: each slot is a fresh interpreter started with
`CUDA_VISIBLE_DEVICES` already set, so the child's CUDA runtime only ever sees its own GPU.

Nothing outlives its parent: each slot is started with `--parent-pid` and asks Linux for SIGHUP
when the supervisor dies (PR_SET_PDEATHSIG), and watches the pid where that is missing; the
supervisor does the same for the process that started it (`actsearch up`) when given a parent
pid. SIGHUP means "stop at once": the supervisor passes it to every slot, which hands its
running trial back and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from service.lifetime import HANGUP, parent_is

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the supervisor looks at its children
RESTART_BASE_S = 1.0  # first restart delay of a crashing slot; doubles up to RESTART_MAX_S
RESTART_MAX_S = 60.0
HEALTHY_S = 60.0  # a child that ran this long before dying restarts without back-off
EXIT_FATAL = 3  # a child's "restarting will not help" code (bad database URL, schema out of date)
MAX_QUICK_CRASHES = 10  # a slot that crashed this often in a row, each within HEALTHY_S: given up
HURRY_KILL_S = 60.0  # after SIGHUP, slots that have not handed back and exited by then are killed


@dataclass(frozen=True)
class Slot:
    """One worker process: its number and the physical GPU it owns (None: CPU)."""

    index: int
    gpu: str | None

    @property
    def label(self) -> str:
        """Name for logs, e.g. 'slot 1 (gpu 0)'."""
        return f"slot {self.index} ({'cpu' if self.gpu is None else 'gpu ' + self.gpu})"


def visible_gpus() -> list[str]:
    """Physical ids of the GPUs this process may use ([] without CUDA).

    Honours an inherited CUDA_VISIBLE_DEVICES: with "2,3" the children get "2" and "3". torch is
    asked in a short-lived subprocess so that the supervisor stays light.
    """
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None and not inherited.strip():
        return []  # set and empty: this process is meant to see no GPU at all
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
        )
        count = int(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        log.warning("could not ask torch for GPUs; using the CPU")
        return []
    if inherited:
        ids = [part.strip() for part in inherited.split(",") if part.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


def plan_slots(gpus: str | None, per_gpu: int) -> list[Slot]:
    """Slots for `--gpus` ("0,1", "all", "cpu", or None/"auto": all GPUs if any, else cpu)."""
    if per_gpu < 1:
        raise ValueError(f"--per-gpu must be at least 1, not {per_gpu}")
    choice = (gpus or "auto").strip().lower()
    if choice == "cpu":
        ids: list[str | None] = [None]
    elif choice in ("auto", "all"):
        found = visible_gpus()
        if not found and choice == "all":
            raise ValueError("--gpus all: no CUDA GPU is visible here; use --gpus cpu")
        ids = list(found) or [None]
    else:
        ids = [_gpu_id(part) for part in choice.split(",") if part.strip()]
        if not ids:
            raise ValueError(f"--gpus {gpus!r} names no GPU; give e.g. 0,1 or all or cpu")
    return [Slot(index=i, gpu=gpu) for i, gpu in enumerate(g for g in ids for _ in range(per_gpu))]


def _gpu_id(part: str) -> str:
    part = part.strip()
    if not part.isdigit():
        raise ValueError(f"--gpus: {part!r} is not a GPU number; give e.g. 0,1 or all or cpu")
    return part


def cpu_threads(slots: Sequence[Slot]) -> int:
    """Threads per CPU slot so that CPU slots together use the cores once, not N times over."""
    cpu_slots = sum(1 for slot in slots if slot.gpu is None) or 1
    return max(1, (os.cpu_count() or 1) // cpu_slots)


@dataclass
class _Child:
    slot: Slot
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start_at: float = 0.0
    done: bool = False  # exited by itself with success (e.g. --max-trials reached)
    given_up: bool = False  # crashed MAX_QUICK_CRASHES times in a row: not restarted any more


@dataclass
class Supervisor:
    """Runs `command + ["--slot", N]` once per slot with its GPU pinned; restarts crashed ones."""

    slots: list[Slot]
    command: list[str]  # the child command line, before the per-slot arguments
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    threads: int = 1
    parent_pid: int | None = None  # stop at once when this process (`actsearch up`) goes away
    max_quick_crashes: int = MAX_QUICK_CRASHES
    _children: list[_Child] = field(default_factory=list, init=False)
    _signals: int = field(default=0, init=False)
    _fatal: bool = field(default=False, init=False)
    _kill_at: float | None = field(default=None, init=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False)

    def run(self) -> int:
        """Start every slot and keep them running until they finish or a signal says stop."""
        self._children = [_Child(slot) for slot in self.slots]
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        if HANGUP != signal.SIGTERM:
            previous[HANGUP] = signal.signal(HANGUP, self._on_hangup)
        try:
            for child in self._children:
                self._start(child)
            while not self._all_exited():
                self._wake.wait(POLL_S)
                self._wake.clear()
                if not parent_is(self.parent_pid):
                    self._hurry(
                        f"the process that started the workers (pid {self.parent_pid}) is gone"
                    )
                self._tend()
            if self._fatal:
                return EXIT_FATAL
            failed = [c for c in self._children if c.given_up or (not c.done and not self._signals)]
            return 1 if failed else 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def pids(self) -> dict[int, int]:
        """Process id of each slot's current child (for tests and logs)."""
        return {
            c.slot.index: c.process.pid
            for c in self._children
            if c.process is not None and c.process.poll() is None
        }

    def _all_exited(self) -> bool:
        if self._signals:
            return all(c.process is None or c.process.poll() is not None for c in self._children)
        return all(c.done or c.given_up for c in self._children)

    def _on_hangup(self, signum: int, _frame: FrameType | None) -> None:
        self._hurry(f"{signal.Signals(signum).name} (the parent or the terminal is gone)")

    def _hurry(self, why: str) -> None:
        # The parent is gone (or a terminal hung up): nobody waits for epochs to finish. Each
        # slot hands its trial back at once and exits; one that hangs is killed after a while.
        if self._kill_at is not None:
            return  # already hurrying (the watch and the signal may both notice)
        log.warning("%s: stopping every slot now; their running trials are handed back", why)
        self._signals = max(self._signals, 1)
        self._kill_at = time.monotonic() + HURRY_KILL_S
        for _, process in self._live():
            process.send_signal(HANGUP)
        self._wake.set()

    def _live(self) -> list[tuple[_Child, subprocess.Popen[bytes]]]:
        return [
            (c, c.process)
            for c in self._children
            if c.process is not None and c.process.poll() is None
        ]

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._signals:
            name = signal.Signals(signum).name
            log.info("%s: stopping workers after their current epoch (again: stop now)", name)
        self._stop_children()

    def _stop_children(self) -> None:
        # First time: each child finishes its epoch and hands its run back. Second: the children
        # stop at once (they hand back too). Third: kill.
        self._signals += 1
        for child in self._children:
            if child.process is None or child.process.poll() is not None:
                continue
            if self._signals >= 3:
                child.process.kill()
            else:
                child.process.send_signal(signal.SIGTERM)
        self._wake.set()

    def _tend(self) -> None:
        now = time.monotonic()
        if self._kill_at is not None and now >= self._kill_at:
            for child, hung in self._live():
                log.warning("%s did not stop; killing it", child.slot.label)
                hung.kill()
            self._kill_at = float("inf")  # once
        for child in self._children:
            process = child.process
            if process is not None and process.poll() is None:
                continue
            if process is not None:
                self._reap(child, process.returncode, now)
            idle = (
                not self._signals and not (child.done or child.given_up) and child.process is None
            )
            if idle and now >= child.next_start_at:
                self._start(child)

    def _reap(self, child: _Child, code: int, now: float) -> None:
        child.process = None
        if self._signals:
            return
        if code == 0:
            log.info("%s finished", child.slot.label)
            child.done = True
            return
        if code == EXIT_FATAL:
            log.error("%s cannot run (see its error above); stopping every slot", child.slot.label)
            self._fatal = True
            self._stop_children()
            return
        ran_s = now - child.started_at
        child.restarts = 0 if ran_s >= HEALTHY_S else child.restarts + 1
        if child.restarts >= self.max_quick_crashes:
            log.error(
                "%s crashed %d times in a row, each within %.0f s of starting (last exit code "
                "%s); not restarting it: its error is above",
                child.slot.label, child.restarts, HEALTHY_S, code,
            )  # fmt: skip
            child.given_up = True
            return
        delay = min(RESTART_MAX_S, RESTART_BASE_S * 2 ** max(0, child.restarts - 1))
        child.next_start_at = now + delay
        log.warning(
            "%s exited with code %s after %.0f s; restarting in %.0f s",
            child.slot.label,
            code,
            ran_s,
            delay,
        )

    def _start(self, child: _Child) -> None:
        env = dict(self.env)
        # Set before the child imports torch: the child sees only its own GPU (as cuda:0).
        env["CUDA_VISIBLE_DEVICES"] = child.slot.gpu if child.slot.gpu is not None else ""
        if child.slot.gpu is None:
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
        args = [
            *self.command,
            "--slot",
            str(child.slot.index),
            "--device",
            "cpu" if child.slot.gpu is None else "cuda",
            "--gpu-label",
            child.slot.gpu or "",
            "--parent-pid",
            str(os.getpid()),
            "--threads",
            str(self.threads),
        ]
        # Own process group: a terminal's Ctrl-C reaches only the supervisor, which then tells
        # each child once (a second SIGINT straight from the terminal would mean "stop now").
        child.process = subprocess.Popen(args, env=env, start_new_session=True)
        child.started_at = time.monotonic()
        log.info("%s started as pid %s", child.slot.label, child.process.pid)
