"""Live progress of the run a slot trains, shared by its training and heartbeat threads.

The training thread calls `step()` at every training step (cheap: a lock and a few floats);
the heartbeat thread sends `snapshot()` with its beat (no extra round trip) and hands back what
the beat learnt: whether the run must stop (`stop_reason`: its study was cancelled or paused,
or the run was reaped), which the training loop polls every few steps. So a long epoch shows
its steps, rate and ETA moving, and a cancel acts within a bounded number of steps.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

RATE_WINDOW_S = 30.0  # the rate is measured over the epoch's last steps, this long at most


class LiveProgress:
    """The current run's phase, step, rate and ETA, and the stop request the beat brought."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"phase": "starting"}
        self._recent: deque[tuple[float, int]] = deque()  # (time, images) of recent steps
        self._images = 0
        self._images_per_step = 0
        self._rate: float | None = None
        self.stop_reason: str | None = None

    def phase(self, name: str, **fields: Any) -> None:
        """Enter a phase ("data", "training", "evaluating", "storing") with its fields."""
        with self._lock:
            self._state.update(fields, phase=name)

    def start_seed(self, seed_index: int, seeds: int, epochs: int, images_per_step: int) -> None:
        """A seed's training begins: the rate starts over (a new seed, maybe a new trial)."""
        with self._lock:
            self._state.update(
                phase="training", seed_index=seed_index, seeds=seeds, epochs=epochs, epoch=0,
                step=0, steps=None, img_per_s=None, eta_s=None,
            )  # fmt: skip
            self._images_per_step = images_per_step
            self._images, self._rate = 0, None
            self._recent.clear()

    def step(self, epoch: int, step: int, steps: int) -> None:
        """One training step done (called by the trainer)."""
        now = self._clock()
        with self._lock:
            if epoch != self._state.get("epoch") or step == 0:
                self._recent.clear()  # a new epoch: evaluation pauses are no training rate
            self._images += self._images_per_step
            self._recent.append((now, self._images))
            while len(self._recent) > 2 and now - self._recent[0][0] > RATE_WINDOW_S:
                self._recent.popleft()
            if len(self._recent) >= 2:
                (t0, i0), (t1, i1) = self._recent[0], self._recent[-1]
                if t1 > t0:
                    self._rate = (i1 - i0) / (t1 - t0)
            self._state.update(phase="training", epoch=epoch, step=step + 1, steps=steps)
            self._state["img_per_s"] = self._rate
            self._state["eta_s"] = self._eta(epoch, step + 1, steps)

    def _eta(self, epoch: int, step: int, steps: int) -> float | None:
        if not self._rate:
            return None
        epochs = int(self._state.get("epochs") or epoch + 1)
        seeds_left = int(self._state.get("seeds") or 1) - int(self._state.get("seed_index") or 0)
        steps_left = (epochs - epoch) * steps - step + (seeds_left - 1) * epochs * steps
        return steps_left * self._images_per_step / self._rate

    def snapshot(self) -> dict[str, Any]:
        """What the heartbeat sends (JSON)."""
        with self._lock:
            return dict(self._state)

    def reset(self) -> None:
        """The slot is idle again."""
        with self._lock:
            self._state = {"phase": "idle"}
            self._rate, self._images = None, 0
            self._recent.clear()
            self.stop_reason = None
