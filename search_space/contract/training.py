"""The "training" part of a trial config: every training option, its default, unit and domain.

This is the one place a training option is defined. The study spec's `training` section is built
from these classes (search_space.spec.sections), the recipes are overrides of them
(search_space.recipes), and the trainer (workers.train) reads a `TrainingConfig` as it is.
To add an option: add a field here (type, `Knob` with its domain, default, description), then
use it in the trainer. Docs (docs/spec.md) are regenerated from here.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, model_validator

from search_space.contract.fields import ConfigModel, Knob
from search_space.registry import Domain

MAX_EPOCHS = 10_000  # training.epochs; also the pruner's step counts (its steps are epochs)
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
SCHEDULES: tuple[str, ...] = ("onecycle", "cosine", "linear", "constant")
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
TTA_MODES: tuple[str, ...] = ("none", "flip", "flip_translate")
PAD_MODES: tuple[str, ...] = ("reflect", "zeros")

_UNIT_OPEN = Domain("float", low=0.0, high=1.0, high_open=True)  # [0, 1)
_POSITIVE = Domain("float", low=0.0, low_open=True)  # (0, inf)
_NON_NEGATIVE = Domain("float", low=0.0)


class AugmentConfig(ConfigModel):
    """On-GPU augmentation."""

    section: ClassVar[str] = "training.augment"

    crop_padding: Annotated[int, Knob(Domain("int", low=0, high=16))] = Field(
        default=4, description="pixels padded on each side before a random 32×32 crop; 0 = none"
    )
    flip: Annotated[bool, Knob(Domain("bool"))] = Field(
        default=True, description="random horizontal flip, probability 1/2"
    )
    # The proxy recipe's options; a spec does not set them (spec=False).
    pad_mode: Annotated[str, Knob(Domain("str", choices=PAD_MODES), spec=False)] = Field(
        default="reflect",
        description="reflect: mirror the border pixels; zeros: pad with the mean colour",
    )
    cutout: Annotated[int, Knob(Domain("int", low=0, high=32), spec=False)] = Field(
        default=0, description="side of a square set to the mean colour at a random place; 0 = off"
    )


class EmaConfig(ConfigModel):
    """training.ema: an average of the weights, evaluated instead of the net (never copied back
    into it while training)."""

    section: ClassVar[str] = "training.ema"

    decay: Annotated[float, Knob(_UNIT_OPEN, search=False)] = Field(
        default=0.999, description="per-step decay, default 0.999 (0 = the net's own weights)"
    )
    start_epoch: Annotated[int, Knob(Domain("int", low=0), search=False)] = Field(
        default=1, description="first epoch (0-based) that averages, below epochs; default 1"
    )
    every: Annotated[int, Knob(Domain("int", low=1), search=False)] = Field(
        default=1, description="training steps between updates, default 1"
    )


class LookaheadConfig(ConfigModel):
    """training.lookahead: airbench's average of the weights, copied back into the net every few
    steps (it changes the training, unlike ema)."""

    section: ClassVar[str] = "training.lookahead"

    start_epoch: Annotated[int, Knob(Domain("int", low=0), search=False)] = Field(
        default=3,
        description="first epoch (0-based) that averages; default 3 (none at or after epochs)",
    )
    every: Annotated[int, Knob(Domain("int", low=1), search=False)] = Field(
        default=5, description="training steps between updates, default 5"
    )
    decay: Annotated[float, Knob(_UNIT_OPEN, search=False)] = Field(
        default=0.95, description="per-step decay, raised to `every`; default 0.95"
    )
    power: Annotated[float, Knob(_NON_NEGATIVE, search=False)] = Field(
        default=3.0, description="the decay ramps in as (step / total_steps) ** power; default 3"
    )


class TrainingConfig(ConfigModel):
    """Training hyperparameters; each is a fixed value or a distribution, except ema, tta,
    lookahead and betas.

    `ema` and `tta` decide what the accuracies measure (averaged or raw weights; each image or
    each image and its mirror), so they take one value for the whole study; `lookahead` and
    `betas` are nested values with no Optuna distribution. docs/workers.md describes them all.
    The defaults here are the generic ones; a model with a recipe replaces them (StudySpec).
    """

    section: ClassVar[str] = "training"

    epochs: Annotated[int, Knob(Domain("int", low=1, high=MAX_EPOCHS))] = Field(
        default=10, description="passes over the training set (the pruner's steps)"
    )
    batch_size: Annotated[int, Knob(Domain("int", low=1))] = Field(
        default=512, description="training images per step"
    )
    optimizer: Annotated[str, Knob(Domain("str", choices=OPTIMIZERS))] = Field(
        default="sgd", description="sgd (momentum, nesterov) or adamw (betas)"
    )
    lr: Annotated[float, Knob(_POSITIVE)] = Field(
        default=0.1, description="peak learning rate; the schedule scales it"
    )
    momentum: Annotated[float, Knob(_UNIT_OPEN)] = Field(
        default=0.9, description="SGD only (AdamW: betas)"
    )
    nesterov: Annotated[bool, Knob(Domain("bool"))] = Field(
        default=True, description="SGD: Nesterov momentum"
    )
    weight_decay: Annotated[float, Knob(_NON_NEGATIVE)] = Field(
        default=5e-4, description="on conv/linear weights; never norm, bias or activation ones"
    )
    schedule: Annotated[str, Knob(Domain("str", choices=SCHEDULES))] = Field(
        default="onecycle", description="lr schedule after the warm-up"
    )
    warmup_epochs: Annotated[float, Knob(_NON_NEGATIVE)] = Field(
        default=1.0, description="epochs of lr warm-up (fractions allowed)"
    )
    label_smoothing: Annotated[float, Knob(_UNIT_OPEN)] = Field(
        default=0.0, description="cross-entropy label smoothing"
    )
    augment: Annotated[AugmentConfig, Knob()] = Field(default_factory=AugmentConfig)
    precision: Annotated[str, Knob(Domain("str", choices=PRECISIONS))] = Field(
        default="auto", description="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    compile: Annotated[bool, Knob(Domain("bool"))] = Field(
        default=False, description="torch.compile the model"
    )
    eval_batch_size: Annotated[int, Knob(Domain("int", low=1))] = Field(
        default=1024, description="images per evaluation batch"
    )
    bias_lr_scale: Annotated[float, Knob(_POSITIVE)] = Field(
        default=1.0, description="lr multiplier of norm and bias parameters (airbench's)"
    )
    activation_lr_scale: Annotated[float, Knob(_POSITIVE)] = Field(
        default=1.0,
        description="lr multiplier of the activations' own trainable parameters (PAU/OPAU "
        "coefficients, SMU's alpha and mu, Swish's beta); 1 = the network's lr",
    )
    grad_clip: Annotated[float | None, Knob(_POSITIVE)] = Field(
        default=None,
        description="clip the global L2 norm of all gradients to this value at every step; "
        "null = no clipping",
    )
    betas: Annotated[tuple[float, float], Knob(_UNIT_OPEN, search=False)] = Field(
        default=(0.9, 0.999),
        description="AdamW's [beta1, beta2], each in [0, 1). Fixed, never searched",
    )
    lookahead: Annotated[LookaheadConfig | None, Knob(search=False, off="no lookahead")] = Field(
        default=None,
        description="airbench's average of the weights, copied back into the net: "
        "{start_epoch, every, decay, power} (missing keys take their defaults); null = off. "
        "Fixed, never searched",
    )
    ema: Annotated[EmaConfig | None, Knob(search=False, off="no averaging")] = Field(
        default=None,
        description="evaluate an average of the weights: {decay, start_epoch, every} "
        "({} = the defaults); null = the net's own weights. Fixed, never searched",
    )
    tta: Annotated[
        str,
        Knob(
            Domain("str", choices=TTA_MODES),
            search=False,
            why_fixed="every trial's accuracy must measure the same thing",
        ),
    ] = Field(
        default="none",
        description="test-time augmentation at every evaluation: none | flip (each image and "
        "its mirror) | flip_translate (also the image shifted one pixel up-left and down-right, "
        "each with its mirror: six passes). Fixed, never searched",
    )

    @model_validator(mode="after")
    def _ema_starts_within_the_training(self) -> TrainingConfig:
        if self.ema is not None and self.ema.start_epoch >= self.epochs:
            raise ValueError(
                f"training.ema.start_epoch ({self.ema.start_epoch}) must be below epochs "
                f"({self.epochs}), or the average never starts; lower it or leave ema out"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        """Every option as JSON, defaults filled in (the record's `resolved_training`)."""
        return self.model_dump(mode="json")
