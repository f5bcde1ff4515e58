"""How many slots a Ray driver holds for the queue, and what each slot asks Ray for.

Ray-free on purpose: the policy is plain arithmetic over the store's queue_depth(), tested with
the real store and no cluster. The driver (workers.ray_driver) applies it.

Policy: the demand is one slot per running run plus one per runnable trial (budget left and
queued retries of runnable studies), within [min_slots, max_slots]. Up at once: slots take
a while to start, and an autoscaler longer still to add a node. Down only to the highest demand
seen over the last `release_after_s` seconds, so a queue that empties between two submissions,
or the gap between a run's end and the next claim, gives nothing back (no thrash).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from service.store.queries.queue import QueueDepth

RELEASE_AFTER_S = 60.0  # demand must stay below the slot count this long before slots go


@dataclass(frozen=True)
class SlotShape:
    """What one slot actor reserves: a share of a GPU (0: a CPU slot) and some CPUs."""

    gpus: float  # 1/per_gpu for a GPU slot, 0 for a CPU slot
    cpus: float

    @classmethod
    def gpu(cls, per_gpu: int, cpus: float) -> SlotShape:
        """`per_gpu` slots share each GPU."""
        if per_gpu < 1:
            raise ValueError(f"--per-gpu must be at least 1, not {per_gpu}")
        return cls(gpus=1.0 / per_gpu, cpus=cpus)

    @classmethod
    def cpu(cls, cpus: float) -> SlotShape:
        """A slot that trains on `cpus` CPUs."""
        if cpus <= 0:
            raise ValueError(f"--ray-cpus-per-slot must be above 0, not {cpus}")
        return cls(gpus=0.0, cpus=cpus)

    @property
    def per_gpu(self) -> int:
        """Slots per GPU (0 for CPU slots)."""
        return round(1 / self.gpus) if self.gpus else 0

    def actor_options(self) -> dict[str, float]:
        """The Ray resource request of one slot actor."""
        options = {"num_cpus": self.cpus}
        if self.gpus:
            options["num_gpus"] = self.gpus
        return options

    def bundles(self, slots: int) -> list[dict[str, float]]:
        """The shapes `slots` slots need, for ray.autoscaler.sdk.request_resources.

        GPU slots are asked for as whole GPUs (each with the CPUs of the slots sharing it): an
        autoscaler adds nodes by whole GPUs, and fractional shapes pack less predictably.
        """
        if slots <= 0:
            return []  # an empty request withdraws the previous one
        if not self.gpus:
            return [{"CPU": self.cpus} for _ in range(slots)]
        gpus = math.ceil(slots / self.per_gpu)
        return [{"GPU": 1.0, "CPU": self.cpus * self.per_gpu} for _ in range(gpus)]

    def fits(self, resources: dict[str, float]) -> int:
        """How many slots a cluster with these total resources holds now."""
        by_cpu = int(resources.get("CPU", 0) // self.cpus) if self.cpus else 0
        if not self.gpus:
            return by_cpu
        by_gpu = int(resources.get("GPU", 0)) * self.per_gpu
        return min(by_gpu, by_cpu) if self.cpus else by_gpu

    def describe(self) -> str:
        """For logs, e.g. '1/2 GPU + 1 CPU'."""
        if not self.gpus:
            return f"{self.cpus:g} CPU"
        share = "1" if self.per_gpu == 1 else f"1/{self.per_gpu}"
        return f"{share} GPU + {self.cpus:g} CPU"


@dataclass
class ScalePolicy:
    """The number of slots to hold for a queue: up at once, down after `release_after_s`."""

    max_slots: int
    min_slots: int = 0
    release_after_s: float = RELEASE_AFTER_S
    _seen: deque[tuple[float, int]] = field(default_factory=deque, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_slots < 1:
            raise ValueError(f"--max-slots must be at least 1, not {self.max_slots}")
        if not 0 <= self.min_slots <= self.max_slots:
            raise ValueError(
                f"--min-slots must be between 0 and --max-slots ({self.max_slots}), "
                f"not {self.min_slots}"
            )
        if self.release_after_s < 0:
            raise ValueError(f"--release-after must be 0 or more, not {self.release_after_s}")

    def wanted(self, depth: QueueDepth) -> int:
        """Slots this queue alone asks for (no memory of earlier queues)."""
        return max(self.min_slots, min(depth.demand, self.max_slots))

    def target(self, depth: QueueDepth, now: float) -> int:
        """Slots to hold at monotonic time `now`: the highest wanted over the release window."""
        self._seen.append((now, self.wanted(depth)))
        while self._seen[0][0] < now - self.release_after_s:
            self._seen.popleft()
        return max(wanted for _, wanted in self._seen)
