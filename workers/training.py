"""The boundary between the run executor and the training engine. Torch-free.

The executor (workers.trial_runner, workers.attempt) talks to a `Training`: load a dataset,
pre-screen an activation, train one seed. `workers.torch_training.TorchTraining` is the real
one; the storage benchmark swaps in a trivial one. What crosses the boundary is the contract's
typed config (search_space.contract) one way and a record or a classified exception
(workers.failures, `Stop`, optuna.TrialPruned) the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search_space.contract import DatasetConfig, TrialConfig


class DataMissing(RuntimeError):
    """The study's data cannot be found on this worker; the message says how to provide it."""


class Stop(Exception):
    """Raised from the epoch callback to end a run early; reason says what to do with it.

    Training implementations must let it through unchanged (TorchTraining translates it to and
    from workers.failures.TrialCancelled, the one stop signal train_trial passes through).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # cancelled | abandoned | handed_back


class Training:
    """The torch side of a trial (data, training, pre-screen)."""

    def device_description(self, gpu_label: str) -> str:
        """What the workers page shows, e.g. "cuda:1 (NVIDIA H100 80GB HBM3)" or "cpu"."""
        raise NotImplementedError

    def load_data(self, dataset: DatasetConfig) -> Any:
        """The decoded splits the dataset section names; DataMissing when not found."""
        raise NotImplementedError

    def identity(self, data: Any) -> tuple[str, str]:
        """(data checksum, training code version) of trainings on this data here: with the
        config and seed, what makes two trainings the same (workers.repeats)."""
        raise NotImplementedError

    def prescreen(self, config: TrialConfig) -> tuple[bool, str | None]:
        """(ok, reason): whether the activation is worth training at all."""
        raise NotImplementedError

    def measure_cost(
        self, kind: str, config: TrialConfig, data: Any, record: dict[str, Any]
    ) -> dict[str, Any]:
        """A trained trial's cost (spec `objectives`: params, step_time) from its record, as
        {"kind", "value", "unit", "device", ...} (workers.cost); CostUnavailable if it cannot."""
        raise NotImplementedError

    def train(
        self,
        config: TrialConfig,
        data: Any,
        on_epoch: Callable[[Any], None],
        should_stop: Callable[[], bool],
        on_step: Callable[[int, int, int], None] | None = None,
    ) -> Any:
        """Train one seed; returns a TrialRecord (raises TrialFailure, TrialPruned, Stop).

        `on_step(epoch, step, steps)` after every training step (live progress)."""
        raise NotImplementedError
