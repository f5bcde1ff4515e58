"""The cost a multi-objective study minimises beside accuracy, measured on this worker.

`params`: the trained model's parameter count, activation parameters included (the record's
`param_count`). `step_time`: the trial's mean training step time (the record's train_s over its
train_steps) divided by that of a ReLU copy of the same model, trained with the same settings on
the same device. The ReLU reference trains REFERENCE_STEPS steps on a slice of the data through
the very same training code (train_trial), after a short warm-up run, and is kept per process per
(model, training settings, device): measured once, then every trial of the model here compares
with it. A ratio therefore holds for this worker's device; it is stored with the device's name.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from typing import Any

import torch

from search_space.contract import ActivationConfig, TrialConfig
from workers.data import DataSplits
from workers.device import device_name

REFERENCE_STEPS = 20  # timed steps of the ReLU copy
WARMUP_STEPS = 3  # untimed steps first: allocations, cuDNN's algorithm search, lazy inits
UNITS = {"params": "parameters", "step_time": "relative to ReLU"}


class CostUnavailable(RuntimeError):
    """The run's record says too little to measure the cost (e.g. a reused run without one)."""


@dataclass(frozen=True)
class MeasuredCost:
    """One run's cost: Optuna's second value, with its unit and where it was measured."""

    kind: str  # params | step_time
    value: float
    device: str
    step_s: float | None = None  # step_time: the trial's mean training step, seconds
    relu_step_s: float | None = None  # step_time: the ReLU copy's

    def to_json(self) -> dict[str, Any]:
        """What the run's record keeps under "cost"."""
        return {
            "kind": self.kind,
            "value": self.value,
            "unit": UNITS[self.kind],
            "device": self.device,
            "step_s": self.step_s,
            "relu_step_s": self.relu_step_s,
        }


def device_label(device: torch.device) -> str:
    """The device a cost was measured on: its GPU's name, or the CPU of this host."""
    if device.type == "cuda":
        return f"{device_name(device)} ({device})"
    return f"cpu ({socket.gethostname()})"


class CostMeter:
    """Measures costs on one device, keeping the ReLU references it timed (one per process)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._relu_step_s: dict[str, float] = {}

    def measure(
        self, kind: str, config: TrialConfig, data: DataSplits, record: dict[str, Any]
    ) -> MeasuredCost:
        """The cost `kind` of a trained trial from its record (CostUnavailable: not there)."""
        label = device_label(self.device)
        if kind == "params":
            count = record.get("param_count")
            if not count:
                raise CostUnavailable("the run's record has no parameter count")
            return MeasuredCost("params", float(count), label)
        steps, train_s = record.get("train_steps"), record.get("train_s")
        if not steps or train_s is None:
            raise CostUnavailable("the run's record has no training step count")
        step_s = float(train_s) / int(steps)
        relu = self.relu_step_s(config, data)
        return MeasuredCost("step_time", step_s / relu, label, step_s, relu)

    def relu_step_s(self, config: TrialConfig, data: DataSplits) -> float:
        """The mean training step of a ReLU copy of the config's model here (measured once)."""
        relu = relu_copy(config)
        key = _reference_key(relu)
        if key not in self._relu_step_s:
            _train_steps(relu, data, self.device, WARMUP_STEPS)
            self._relu_step_s[key] = _train_steps(relu, data, self.device, REFERENCE_STEPS)
        return self._relu_step_s[key]


def relu_copy(config: TrialConfig) -> TrialConfig:
    """The same model and training with ReLU everywhere, one seed, no time limit."""
    return config.model_copy(
        update={"activation": ActivationConfig(family="relu"), "seeds": 1, "timeout_s": None}
    )


# What a training step's time depends on beside the model (the learning rate, epochs and the
# like change nothing): a trial with another lr reuses the reference.
STEP_SETTINGS = ("batch_size", "optimizer", "precision", "compile", "grad_clip", "augment")


def _reference_key(config: TrialConfig) -> str:
    training = config.training
    settings = {name: getattr(training, name) for name in STEP_SETTINGS}
    settings["averaging"] = (training.ema is not None, training.lookahead is not None)
    return f"{config.model.model_dump_json()} {settings}"


def _train_steps(config: TrialConfig, data: DataSplits, device: torch.device, steps: int) -> float:
    """Train `config` for about `steps` steps on a slice of the data; its mean step time."""
    from workers.train import train_trial  # the training engine, as every trial runs it

    batch = config.training.batch_size
    per_epoch = max(1, min(steps, len(data.train_y) // batch))
    epochs = math.ceil(steps / per_epoch)
    sliced = _slice(data, per_epoch * batch, config.training.eval_batch_size)
    training = config.training.model_copy(update={"epochs": epochs, "warmup_epochs": 0})
    record = train_trial(config.model_copy(update={"training": training}), sliced, device)
    return float(record.train_s) / max(1, record.train_steps)


def _slice(data: DataSplits, train: int, evaluate: int) -> DataSplits:
    """The first images of each split: enough for the steps, one batch to evaluate."""
    return DataSplits(
        data.train_x[:train], data.train_y[:train],
        data.val_x[:evaluate], data.val_y[:evaluate],
        data.test_x[:evaluate], data.test_y[:evaluate],
        data.classes, data.checksum, data.source,
    )  # fmt: skip
