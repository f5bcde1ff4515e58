"""The training engine: one trial (one seed) of a resolved trial config, start to finish.

Data stay resident on the device (uint8) and are augmented there in batches; on CUDA the model
runs under bf16 autocast in channels_last, on the CPU in fp32 (the deterministic reference).
Failures are classified (diverged, oom, timeout, error) as TrialFailure; pruning
(optuna.TrialPruned) and cancellation (TrialCancelled) raised by the callbacks pass through as-is.

"training" keys for fast recipes such as the proxy network's (search_space.recipes), beside the
classic ones: ``bias_lr_scale`` (lr multiplier for norm and bias parameters, airbench's bias scaler; default 1),
``lookahead`` (``{"start_epoch", "every", "decay", "power"}``: airbench's EMA of the weights that is
copied back into the net; default off), ``betas`` (AdamW; default [0.9, 0.999]), ``ema``
(``{"decay", "start_epoch", "every"}``: an EMA of the weights kept beside the net and used for
every evaluation and for the recorded final activation parameters; default off), ``tta``
(``"none"``; ``"flip"``: evaluation averages the logits of each image and its mirror image;
``"flip_translate"``: also of the image shifted by one pixel, see eval_logits; default none)
and ``grad_clip`` (a number > 0: the largest global L2 norm of all gradients at each step;
default None, no clipping). docs/workers.md has the details.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from optuna.exceptions import TrialPruned
from torch import Tensor, nn

# The recipes live with the spec (a proxy study's training defaults); re-exported for callers.
from search_space.recipes import PROXY_RECIPE as PROXY_RECIPE
from search_space.recipes import STANDARD_RECIPE as STANDARD_RECIPE
from search_space.recipes import recipe as recipe
from workers import device as dev
from workers.augment import AugmentConfig, Normalizer, TrainBatches, eval_batches
from workers.data import DataSplits
from workers.models import ActFactory, build_model
from workers.record import EpochReport, TrialRecord, build_manifest

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "linear", "constant")
FAILURE_KINDS = ("diverged", "oom", "timeout", "error")
TTA_MODES = ("none", "flip", "flip_translate")
WHITENING_IMAGES = 5000  # images used by data-dependent initialisation (proxy whitening)
CURVE_GRID = np.linspace(-4.0, 4.0, 81)
# On CUDA, reading the loss forces a sync; check for NaN and stop requests every this many steps.
CHECK_EVERY_CUDA = 25

__all__ = [
    "EmaConfig",
    "EpochReport",
    "TrainingConfig",
    "TrialCancelled",
    "TrialFailure",
    "TrialRecord",
    "eval_logits",
    "recipe",
    "train_trial",
]


class TrialCancelled(Exception):
    """The trial was asked to stop (study cancelled or paused, run reaped)."""


class TrialFailure(Exception):
    """A trial failed; kind is one of diverged, oom, timeout, error; epoch is 0-based."""

    def __init__(
        self, kind: str, message: str, epoch: int | None, details: str | None = None
    ) -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; valid: {', '.join(FAILURE_KINDS)}")
        super().__init__(f"{kind} at epoch {epoch}: {message}")
        self.kind = kind
        self.message = message
        self.epoch = epoch
        self.details = details  # the traceback, for kind "error"


@dataclass(frozen=True)
class LookaheadConfig:
    """airbench's weight EMA, copied back into the net every few steps."""

    start_epoch: int = 3  # first epoch (0-based) that averages
    every: int = 5  # steps between updates
    decay: float = 0.95  # per-step decay, raised to `every`
    power: float = 3.0  # decay ramps in as (step / total_steps) ** power

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        _check_average("lookahead", self.start_epoch, self.every, self.decay)
        if not self.power >= 0:
            raise ValueError(f"lookahead.power must be >= 0, not {self.power!r}")


@dataclass(frozen=True)
class EmaConfig:
    """An exponential moving average of the weights, evaluated instead of the net (never copied
    back into it while training)."""

    decay: float = 0.999  # per-step decay in [0, 1), raised to `every`; 0 = the net's own weights
    start_epoch: int = 1  # first epoch (0-based) that averages; until then the EMA is the net
    every: int = 1  # steps between updates

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        _check_average("ema", self.start_epoch, self.every, self.decay)


def _check_average(name: str, start_epoch: int, every: int, decay: float) -> None:
    if not isinstance(start_epoch, int) or isinstance(start_epoch, bool) or start_epoch < 0:
        raise ValueError(f"{name}.start_epoch must be an integer >= 0, not {start_epoch!r}")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"{name}.every must be an integer >= 1, not {every!r}")
    if not isinstance(decay, int | float) or isinstance(decay, bool) or not 0 <= decay < 1:
        raise ValueError(f"{name}.decay must be a number in [0, 1), not {decay!r}")


def _sub_config(cls: type[Any], name: str, value: Any) -> Any:
    """Build a nested config dataclass from a mapping; unknown keys and non-mappings are errors."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping or null, not {value!r}")
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise ValueError(f"unknown {name} keys {', '.join(unknown)}; valid: {', '.join(valid)}")
    config = cls(**value)
    config.check()
    return config


@dataclass(frozen=True)
class TrainingConfig:
    """The "training" part of a resolved trial config, with defaults for missing keys."""

    epochs: int = 30
    batch_size: int = 512
    optimizer: str = "sgd"  # "sgd" (momentum, optionally Nesterov) or "adamw"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # conv/linear weights only; never norm, bias or activation params
    schedule: str = "onecycle"  # onecycle | cosine | linear | constant, see lr_factor
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    eval_batch_size: int = 1024
    bias_lr_scale: float = 1.0
    lookahead: LookaheadConfig | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    ema: EmaConfig | None = None  # evaluate an EMA of the weights (see EmaConfig); None = off
    tta: str = "none"  # test-time augmentation at every evaluation: none, flip, flip_translate
    grad_clip: float | None = None  # max global L2 norm of the gradients per step; None = off

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> TrainingConfig:
        """Parse and check the mapping; unknown keys are logged and ignored."""
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(value) - known)
        if extra:
            log.warning("ignoring unknown training keys: %s", ", ".join(extra))
        kwargs = {k: v for k, v in value.items() if k in known}
        kwargs["augment"] = AugmentConfig.from_dict(value.get("augment"))
        lookahead, ema = value.get("lookahead"), value.get("ema")
        # An empty lookahead mapping has always meant off; an empty ema one means the defaults.
        kwargs["lookahead"] = (
            _sub_config(LookaheadConfig, "lookahead", lookahead) if lookahead else None
        )
        kwargs["ema"] = None if ema is None else _sub_config(EmaConfig, "ema", ema)
        if "betas" in value:
            kwargs["betas"] = tuple(value["betas"])
        config = cls(**kwargs)
        config.check()
        return config

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be at least 1")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError("lr must be > 0, weight_decay >= 0, label_smoothing in [0, 1)")
        if self.tta not in TTA_MODES:
            raise ValueError(f"unknown tta {self.tta!r}; valid: {', '.join(TTA_MODES)}")
        clip = self.grad_clip
        if clip is not None and (
            isinstance(clip, bool) or not isinstance(clip, int | float) or not 0 < clip < math.inf
        ):
            raise ValueError(f"grad_clip must be a number > 0 or null (off), not {clip!r}")
        if self.ema is not None and self.ema.start_epoch >= self.epochs:
            raise ValueError(
                f"ema.start_epoch ({self.ema.start_epoch}) must be below epochs ({self.epochs}), "
                "or the average never starts; lower it or leave ema out"
            )


# ---------------------------------------------------------------------------------------------
# Activation sites


class SiteRecorder:
    """Wraps an activation factory and remembers every module it made (the activation sites)."""

    def __init__(self, factory: ActFactory) -> None:
        self.factory = factory
        self.sites: list[tuple[nn.Module, int]] = []

    def __call__(self, channels: int) -> nn.Module:
        module = self.factory(channels)
        self.sites.append((module, channels))
        return module

    def parameter_ids(self) -> set[int]:
        """ids of all parameters owned by activation modules."""
        return {id(p) for module, _ in self.sites for p in module.parameters()}

    @property
    def head_only(self) -> bool:
        """Whether the wrapped factory makes head-only modules (Maxout)."""
        return bool(getattr(self.factory, "head_only", False))

    @property
    def width_factor(self) -> int:
        """Inputs per output of the wrapped factory's modules (Maxout: k)."""
        return int(getattr(self.factory, "width_factor", 1))


def make_act_factory(activation_cfg: dict[str, Any]) -> ActFactory:
    """The activation factory for a config's "activation" part (search_space.build)."""
    # Imported here so that `import workers.train` stays light (the registry loads lazily).
    from search_space.build import ActivationFactory

    return ActivationFactory(activation_cfg)


def activation_parameters(model: nn.Module) -> dict[str, Any]:
    """Learned activation parameters per site (constrained values, as the registry shows them)."""
    from search_space.build import activation_parameters as parameters

    return dict(parameters(model))


def activation_curves(model: nn.Module) -> dict[str, Any]:
    """f and f' of every activation site on CURVE_GRID, computed on CPU copies of the sites."""
    from search_space.build import activation_sites
    from search_space.curves import activation_curves as curves

    # Copies keep the curve sampling off the training device and away from the live modules.
    tree = nn.Module()
    for name, module in activation_sites(model).items():
        _attach(tree, name, copy.deepcopy(module).cpu())
    return dict(curves(tree, CURVE_GRID))


def _attach(root: nn.Module, dotted: str, module: nn.Module) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    root.add_module(leaf, module)


# ---------------------------------------------------------------------------------------------
# Optimisation


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
        {"params": activation, "weight_decay": 0.0, "lr_scale": 1.0},
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


# ---------------------------------------------------------------------------------------------
# The trial


@dataclass
class _Progress:
    epoch: int | None = None
    train_loss: list[float] = field(default_factory=list)
    val_accs: list[float] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0
    images: int = 0


class _Trial:
    """State of one running trial; train_trial is its only user."""

    def __init__(
        self,
        config: dict[str, Any],
        data: DataSplits,
        device: torch.device,
        on_epoch: Callable[[EpochReport], None] | None,
        should_stop: Callable[[], bool] | None,
        on_step: Callable[[int, int, int], None] | None,
        act_factory: ActFactory | None,
    ) -> None:
        self.started = time.perf_counter()
        self.config = config
        self.device = device
        self.on_epoch = on_epoch
        self.should_stop = should_stop
        self.on_step = on_step
        self.train_cfg = TrainingConfig.from_dict(config.get("training", {}))
        self.seed = int(config.get("seed", 0))
        timeout = config.get("timeout_s")
        self.timeout_s = float(timeout) if timeout else None
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
        factory = self.act_factory or make_act_factory(self.config.get("activation", {}))
        recorder = SiteRecorder(factory)
        model_cfg = self.config.get("model", {})
        model = build_model(
            str(model_cfg.get("name", "resnet18")),
            data.num_classes,
            recorder,
            float(model_cfg.get("width", 1.0)),
        ).to(self.device)
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
                self.config,
                self.device,
                data.checksum,
                self.seed,
                resolved_training=asdict(self.train_cfg),
            ),
        )


def train_trial(
    config: dict[str, Any],
    data: DataSplits,
    device: torch.device,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    on_step: Callable[[int, int, int], None] | None = None,
    act_factory: ActFactory | None = None,
) -> TrialRecord:
    """Train one seed of a resolved trial config and return its record.

    on_epoch may raise optuna.TrialPruned or TrialCancelled (re-raised as-is); should_stop() is
    polled during training and turns into TrialCancelled. on_step(epoch, step, steps) is for
    progress bars; act_factory replaces the factory built from config["activation"] (tests).
    """
    trial: _Trial | None = None
    with dev.free_cuda_cache_on_exit(device):
        try:
            trial = _Trial(config, data, device, on_epoch, should_stop, on_step, act_factory)
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
