"""Averages of the weights during training: airbench's Lookahead and an evaluated EMA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from search_space.contract import EmaConfig, LookaheadConfig


class Lookahead:
    """airbench's Lookahead: an EMA of all float state, copied back into the model."""

    def __init__(self, model: nn.Module, config: LookaheadConfig, total_steps: int) -> None:
        self.config = config
        self.total_steps = total_steps
        self.state = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.average: list[Tensor] | None = None

    def after_step(self, step: int, epoch: int) -> None:
        """Update (and copy back) every `every` steps from start_epoch on; step counts from 1."""
        if epoch < self.config.start_epoch or step % self.config.every != 0:
            return
        if self.average is None:
            self.average = [t.detach().clone() for t in self.state]
            return
        base = self.config.decay**self.config.every
        self.update(base * (step / self.total_steps) ** self.config.power)

    def update(self, decay: float) -> None:
        """average ← decay·average + (1−decay)·model, then model ← average."""
        if self.average is None:
            return
        with torch.no_grad():
            torch._foreach_lerp_(self.average, self.state, 1.0 - decay)
            torch._foreach_copy_(self.state, self.average)


class WeightEma:
    """An exponential moving average of the net's float state, swapped in for evaluation.

    The average covers every floating-point entry of the state dict: parameters (activation
    parameters included) and the BatchNorm running statistics. Averaging the running statistics
    too (timm's ModelEma does the same) keeps them close to statistics of the averaged weights;
    copying the net's instead would pair the averaged weights with statistics of the latest
    weights. Integer buffers (num_batches_tracked) are not averaged and are left as the net has
    them. Updates are multi-tensor (_foreach) kernels, one set per update, not one per tensor.
    """

    def __init__(self, model: nn.Module, config: EmaConfig) -> None:
        self.config = config
        # state_dict() tensors share storage with the live parameters and buffers, so they
        # follow the eager module whether or not a torch.compile wrapper runs it.
        self.state = [t for t in model.state_dict().values() if t.is_floating_point()]
        with torch.no_grad():
            self.average = [t.detach().clone() for t in self.state]
        self._backup: list[Tensor] | None = None

    def after_step(self, step: int, epoch: int) -> None:
        """Average every `every` steps from start_epoch on; step counts from 1."""
        if epoch < self.config.start_epoch or step % self.config.every != 0:
            return
        self.update(self.config.decay**self.config.every)

    def end_epoch(self, epoch: int) -> None:
        """Before start_epoch the average is the net itself: the next epoch starts from there."""
        if epoch < self.config.start_epoch:
            self.update(0.0)

    def update(self, decay: float) -> None:
        """average ← decay·average + (1−decay)·net (decay 0 copies the net exactly)."""
        with torch.no_grad():
            if decay == 0:
                torch._foreach_copy_(self.average, self.state)
            else:
                torch._foreach_lerp_(self.average, self.state, 1.0 - decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The average in the net for the duration of the block, then the net's own state back."""
        with torch.no_grad():
            if self._backup is None:
                self._backup = [t.detach().clone() for t in self.state]
            else:
                torch._foreach_copy_(self._backup, self.state)
            torch._foreach_copy_(self.state, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.state, self._backup)

    def copy_to(self) -> None:
        """Put the average into the net for good (training is over)."""
        with torch.no_grad():
            torch._foreach_copy_(self.state, self.average)
        self._backup = None
