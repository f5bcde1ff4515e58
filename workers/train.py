"""The training engine: one trial (one seed) of a resolved trial config, start to finish.

Data stay resident on the device (uint8) and are augmented there in batches; on CUDA the model
runs under bf16 autocast in channels_last, on the CPU in fp32 (the deterministic reference).
Failures are classified (diverged, oom, timeout, error) as TrialFailure; pruning
(optuna.TrialPruned) and cancellation (TrialCancelled) raised by the callbacks pass through as-is.

The trial's options are the contract's (search_space.contract.TrainingConfig: every option,
its default and domain, stated once); docs/workers.md explains the fast-recipe ones
(`bias_lr_scale`, `lookahead`, `betas`, `ema`, `tta`, `grad_clip`). The optimiser and schedule
are in workers.optim, the weight averages in workers.averaging, the activation sites in
workers.sites.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from optuna.exceptions import TrialPruned
from torch import Tensor, nn

from search_space.contract import (
    EmaConfig,
    LookaheadConfig,
    TrainingConfig,
    TrialConfig,
    parse_trial_config,
)
from search_space.contract.training import TTA_MODES
from search_space.recipes import recipe
from workers import device as dev
from workers.augment import Normalizer, TrainBatches, eval_batches
from workers.averaging import Lookahead, WeightEma
from workers.data import DataSplits
from workers.failures import FAILURE_KINDS, TrialCancelled, TrialFailure
from workers.models import ActFactory, build_model
from workers.optim import build_optimizer, lr_factor, param_groups
from workers.record import EpochReport, TrialRecord, build_manifest
from workers.sites import SiteRecorder, activation_curves, activation_parameters, make_act_factory

log = logging.getLogger(__name__)

WHITENING_IMAGES = 5000  # images used by data-dependent initialisation (proxy whitening)
# On CUDA, reading the loss forces a sync; check for NaN and stop requests every this many steps.
CHECK_EVERY_CUDA = 25

__all__ = [
    "FAILURE_KINDS",
    "TTA_MODES",
    "EmaConfig",
    "EpochReport",
    "LookaheadConfig",
    "TrainingConfig",
    "TrialCancelled",
    "TrialFailure",
    "TrialRecord",
    "eval_logits",
    "recipe",
    "train_trial",
]


def eval_logits(runner: nn.Module, images: Tensor, tta: str = "none") -> Tensor:
    """Logits of a batch, with test-time augmentation when asked.

    "flip": the mean of the logits of the images and their mirrors. "flip_translate" (airbench's
    level 2): half that, plus half the mean over the images shifted one pixel up-left and one
    down-right (reflect padding), each with its mirror: six passes. Passes of the batch's own
    shape rather than one large one: a compiled runner reuses its graph, and peak memory stays
    that of one evaluation batch.
    """
    if tta == "none":
        return runner(images)
    if tta == "flip":
        return _mirror_mean(runner, images)
    if tta == "flip_translate":
        size = images.shape[-1]
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        layout = (
            torch.channels_last
            if images.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        shifted = [
            padded[..., :size, :size].contiguous(memory_format=layout),
            padded[..., 2:, 2:].contiguous(memory_format=layout),
        ]
        translated = (_mirror_mean(runner, shifted[0]) + _mirror_mean(runner, shifted[1])) / 2
        return (_mirror_mean(runner, images) + translated) / 2
    raise ValueError(f"unknown tta {tta!r}; valid: {', '.join(TTA_MODES)}")


def _mirror_mean(runner: nn.Module, images: Tensor) -> Tensor:
    return (runner(images).float() + runner(images.flip(-1)).float()) / 2


@dataclass
class _Progress:
    epoch: int | None = None
    train_loss: list[float] = field(default_factory=list)
    val_accs: list[float] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0
    images: int = 0
    steps: int = 0


class _Trial:
    """State of one running trial; train_trial is its only user."""

    def __init__(
        self,
        config: TrialConfig,
        given: dict[str, Any],
        data: DataSplits,
        device: torch.device,
        on_epoch: Callable[[EpochReport], None] | None,
        should_stop: Callable[[], bool] | None,
        on_step: Callable[[int, int, int], None] | None,
        act_factory: ActFactory | None,
    ) -> None:
        self.started = time.perf_counter()
        self.given = given  # the config as the caller wrote it, for the manifest
        self.config = config
        self.device = device
        self.on_epoch = on_epoch
        self.should_stop = should_stop
        self.on_step = on_step
        self.train_cfg = config.training
        self.seed = config.seed
        self.timeout_s = float(config.timeout_s) if config.timeout_s else None
        self.dtype = dev.autocast_dtype(self.train_cfg.precision, device)
        self.channels_last = device.type == "cuda"
        self.check_every = CHECK_EVERY_CUDA if device.type == "cuda" else 1
        self.progress = _Progress()
        self.act_factory = act_factory
        self.data = data
        self.ema: WeightEma | None = None

    def run(self) -> TrialRecord:
        dev.configure_backends(self.device)
        dev.reset_peak_memory(self.device)
        torch.manual_seed(self.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

        t0 = time.perf_counter()
        data = self.data.to(self.device)
        self.normalizer = Normalizer.fit(data.train_x).to(self.device)
        model, recorder = self._build_model(data)
        dev.synchronize(self.device)
        data_s = time.perf_counter() - t0

        initial_params = activation_parameters(model)
        initial_curves = activation_curves(model)
        runner = model
        if self.train_cfg.compile:
            runner = torch.compile(model)  # type: ignore[assignment]
        optimizer = build_optimizer(
            param_groups(model, recorder.parameter_ids(), self.train_cfg),
            self.train_cfg,
            self.device,
        )
        self._fit(model, runner, optimizer, data)
        if self.ema is not None:
            # From here on the net is the average: the test evaluation and the recorded final
            # activation parameters and curves are those of the weights that were evaluated.
            self.ema.copy_to()

        t0 = time.perf_counter()
        test_acc = self._evaluate(runner, data.test_x, data.test_y)
        self.progress.eval_s += time.perf_counter() - t0
        return self._record(model, data, data_s, test_acc, initial_params, initial_curves)

    def _build_model(self, data: DataSplits) -> tuple[nn.Module, SiteRecorder]:
        factory = self.act_factory or make_act_factory(self.config.activation)
        recorder = SiteRecorder(factory)
        model_cfg = self.config.model
        model = build_model(model_cfg.name, data.num_classes, recorder, model_cfg.width)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        init_from_data = getattr(model, "init_from_data", None)
        if callable(init_from_data):
            init_from_data(self.normalizer(data.train_x[:WHITENING_IMAGES]))
        return model, recorder

    def _fit(
        self,
        model: nn.Module,
        runner: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: DataSplits,
    ) -> None:
        cfg = self.train_cfg
        batches = TrainBatches(
            data.train_x, data.train_y, cfg.batch_size, self.normalizer, cfg.augment,
            self.generator, self.channels_last,
        )  # fmt: skip
        total = cfg.epochs * len(batches)
        warmup = round(cfg.warmup_epochs * len(batches))
        lookahead = Lookahead(model, cfg.lookahead, total) if cfg.lookahead else None
        self.ema = WeightEma(model, cfg.ema) if cfg.ema is not None else None
        scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        set_epoch = getattr(model, "set_epoch", None)
        step = 0
        for epoch in range(cfg.epochs):
            self.progress.epoch = epoch
            if callable(set_epoch):
                set_epoch(epoch)
            runner.train()
            loss_sum = torch.zeros((), device=self.device)
            started = time.perf_counter()
            for i, (images, labels) in enumerate(batches):
                factor = lr_factor(step, total, warmup, cfg.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * factor * group["lr_scale"]
                loss_sum += self._step(runner, optimizer, scaler, images, labels)
                step += 1
                if lookahead is not None:
                    lookahead.after_step(step, epoch)
                if self.ema is not None:
                    self.ema.after_step(step, epoch)
                self._check_time(epoch)
                if step % self.check_every == 0:
                    self._check_loss(loss_sum, epoch)
                    self._check_stop()
                if self.on_step is not None:
                    self.on_step(epoch, i, len(batches))
            if lookahead is not None:
                lookahead.update(1.0)
            if self.ema is not None:
                self.ema.end_epoch(epoch)
            dev.synchronize(self.device)
            epoch_s = time.perf_counter() - started
            self._end_epoch(runner, data, loss_sum, len(batches), epoch_s, factor * cfg.lr)

    def _step(
        self,
        runner: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        images: Tensor,
        labels: Tensor,
    ) -> Tensor:
        with dev.autocast(self.device, self.dtype):
            logits = runner(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.train_cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        clip = self.train_cfg.grad_clip
        if scaler is None:
            loss.backward()
            if clip is not None:
                self._clip_gradients(optimizer, clip)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            if clip is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                self._clip_gradients(optimizer, clip)
            scaler.step(optimizer)
            scaler.update()
        return loss.detach().float()

    @staticmethod
    def _clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
        """Scale all gradients down together so that their global L2 norm is at most max_norm.

        Multi-tensor kernels and no host sync: the norm stays on the device. A NaN or inf
        gradient leaves NaN gradients behind, so the periodic loss check reports the divergence
        (or GradScaler skips the step) without error_if_nonfinite reading the norm every step.
        """
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

    def _end_epoch(
        self,
        runner: nn.Module,
        data: DataSplits,
        loss_sum: Tensor,
        steps: int,
        epoch_s: float,
        lr: float,
    ) -> None:
        epoch = self.progress.epoch or 0
        train_loss = self._check_loss(loss_sum, epoch) / steps
        images = steps * min(self.train_cfg.batch_size, len(data.train_y))
        self.progress.train_s += epoch_s
        self.progress.images += images
        self.progress.steps += steps
        t0 = time.perf_counter()
        with self.ema.applied() if self.ema is not None else nullcontext():
            val_acc = self._evaluate(runner, data.val_x, data.val_y)
        self.progress.eval_s += time.perf_counter() - t0
        self.progress.train_loss.append(train_loss)
        self.progress.val_accs.append(val_acc)
        report = EpochReport(
            epoch=epoch,
            epochs=self.train_cfg.epochs,
            train_loss=train_loss,
            val_acc=val_acc,
            img_per_s=images / max(epoch_s, 1e-9),
            elapsed_s=time.perf_counter() - self.started,
            lr=lr,
        )
        log.debug("epoch %s: %s", epoch, report)
        if self.on_epoch is not None:
            self.on_epoch(report)
        self._check_stop()

    @torch.no_grad()
    def _evaluate(self, runner: nn.Module, images: Tensor, labels: Tensor) -> float:
        runner.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        batches = eval_batches(
            images, labels, self.train_cfg.eval_batch_size, self.normalizer, self.channels_last
        )
        for x, y in batches:
            with dev.autocast(self.device, self.dtype):
                logits = eval_logits(runner, x, self.train_cfg.tta)
            correct += (logits.argmax(dim=1) == y).sum()
        return int(correct.item()) / max(1, len(labels))

    def _check_loss(self, loss_sum: Tensor, epoch: int) -> float:
        value = float(loss_sum.item())
        if not math.isfinite(value):
            raise TrialFailure("diverged", f"training loss became {value}", epoch)
        return value

    def _check_time(self, epoch: int) -> None:
        if self.timeout_s is not None and time.perf_counter() - self.started > self.timeout_s:
            raise TrialFailure("timeout", f"trial ran past its {self.timeout_s:g} s limit", epoch)

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrialCancelled(f"stopped on request at epoch {self.progress.epoch}")

    def _record(
        self,
        model: nn.Module,
        data: DataSplits,
        data_s: float,
        test_acc: float,
        initial_params: dict[str, Any],
        initial_curves: dict[str, Any],
    ) -> TrialRecord:
        p = self.progress
        best = int(np.argmax(p.val_accs))
        peak, peak_kind = dev.peak_memory_bytes(self.device)
        return TrialRecord(
            val_acc=p.val_accs[-1],
            best_val_acc=p.val_accs[best],
            best_epoch=best,
            test_acc=test_acc,
            epochs_done=len(p.val_accs),
            train_loss=p.train_loss,
            val_accs=p.val_accs,
            img_per_s=p.images / max(p.train_s, 1e-9),
            data_s=data_s,
            train_s=p.train_s,
            eval_s=p.eval_s,
            duration_s=time.perf_counter() - self.started,
            peak_memory_bytes=peak,
            peak_memory_kind=peak_kind,
            precision=dev.precision_name(self.dtype),
            param_count=sum(w.numel() for w in model.parameters()),
            train_steps=p.steps,
            activation_params={
                "initial": initial_params,
                "final": activation_parameters(model),
            },
            activation_curves={
                "initial": initial_curves,
                "final": activation_curves(model),
            },
            evaluation={
                "weights": "ema" if self.train_cfg.ema is not None else "raw",
                "tta": self.train_cfg.tta,
            },
            manifest=build_manifest(
                self.given,
                self.device,
                data.checksum,
                self.seed,
                resolved_training=self.train_cfg.resolved(),
            ),
        )


def train_trial(
    config: TrialConfig | Mapping[str, Any],
    data: DataSplits,
    device: torch.device,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    on_step: Callable[[int, int, int], None] | None = None,
    act_factory: ActFactory | None = None,
) -> TrialRecord:
    """Train one seed of a resolved trial config and return its record.

    `config` is the contract's TrialConfig, or a mapping of one (a stored config; a bad value is
    a TrialFailure "error" naming the field). on_epoch may raise optuna.TrialPruned or
    TrialCancelled (re-raised as-is); should_stop() is polled during training and turns into
    TrialCancelled. on_step(epoch, step, steps) is for progress bars; act_factory replaces the
    factory built from the config's activation (tests).
    """
    trial: _Trial | None = None
    with dev.free_cuda_cache_on_exit(device):
        try:
            typed = parse_trial_config(config)
            given = typed.canonical() if isinstance(config, TrialConfig) else dict(config)
            trial = _Trial(typed, given, data, device, on_epoch, should_stop, on_step, act_factory)
            return trial.run()
        except (TrialPruned, TrialCancelled, TrialFailure, KeyboardInterrupt):
            raise
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            epoch = trial.progress.epoch if trial else None
            raise TrialFailure("oom", str(exc).splitlines()[0], epoch) from exc
        except Exception as exc:
            raise TrialFailure(
                "error",
                f"{type(exc).__name__}: {exc}",
                trial.progress.epoch if trial else None,
                details=traceback.format_exc(),
            ) from exc
