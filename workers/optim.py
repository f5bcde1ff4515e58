"""Optimiser, parameter groups and learning-rate schedule of one trial."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from search_space.contract import TrainingConfig


def param_groups(
    model: nn.Module, activation_ids: set[int], config: TrainingConfig
) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only; norm, bias and activation params decay-free."""
    weights, norms_biases, activation = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in activation_ids:
            activation.append(p)
        elif p.ndim <= 1:
            norms_biases.append(p)
        else:
            weights.append(p)
    groups = [
        {"params": weights, "weight_decay": config.weight_decay, "lr_scale": 1.0},
        {"params": norms_biases, "weight_decay": 0.0, "lr_scale": config.bias_lr_scale},
        {"params": activation, "weight_decay": 0.0, "lr_scale": config.activation_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    groups: list[dict[str, Any]], config: TrainingConfig, device: torch.device
) -> torch.optim.Optimizer:
    """SGD (Nesterov when asked and momentum > 0) or AdamW; fused kernels on CUDA."""
    fused = device.type == "cuda"
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)
    return torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        fused=fused,
    )


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at a step.

    All schedules warm up linearly from 0 over `warmup` steps, then: linear → down to 0 at the
    end; cosine → half-cosine to 0; constant → stay; onecycle → PyTorch OneCycleLR's shape
    (cosine from lr/25 up to lr over the warm-up, 30 % of training if no warm-up is set, then
    cosine down to lr/25e4).
    """
    if schedule == "onecycle":
        return _onecycle(step, total, warmup if warmup > 0 else round(0.3 * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def _onecycle(step: int, total: int, warmup: int) -> float:
    start, end = 1 / 25, 1 / 25e4

    def cosine(a: float, b: float, t: float) -> float:
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    if step < warmup:
        return cosine(start, 1.0, step / warmup)
    return cosine(1.0, end, (step - warmup) / max(1, total - warmup))
