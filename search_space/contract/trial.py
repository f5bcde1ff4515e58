"""The resolved trial config: what a study spec's suggestion hands the worker, typed once.

`TrialConfig` is the contract between spec and worker (docs/architecture.md): the spec's
`dataset`, `model` and `training` sections are built from the sections here, `suggest_config`
fills one in per trial, and the worker trains `parse_trial_config(stored mapping)` as it is.
Its JSON form with every default filled in (`canonical`) is what makes two trainings the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from search_space.contract.fields import ConfigModel, Knob, parse
from search_space.contract.training import TrainingConfig
from search_space.registry import FIT_TARGETS, Domain, Family, Scope, resolve_settings

INT32_MAX = 2**31 - 1
SEED_RANGE = (0, INT32_MAX)  # seed, sampler.seed, dataset.split_seed
MAX_SEEDS = 100  # seeds per configuration: each trial trains this many times
# dataset.val_size and train_subset: a worker holds the whole dataset in memory as 32×32 uint8
# images (3 KiB each), so 10 million images (30 GiB) is past any machine it runs on.
MAX_IMAGES = 10_000_000
CIFAR_TRAIN_IMAGES = 50_000  # CIFAR-10's and CIFAR-100's training sets, split into train and val
DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar100", "folder")
MODEL_NAMES: tuple[str, ...] = (
    "resnet18",
    "preact_resnet18",
    "preact_resnet34",
    "mobilenet_v2",
    "shufflenet_v2",
    "efficientnet_b0",
    "lenet",
    "vgg11",
    "vgg16",
    "proxy",
)
# Models whose classifier has hidden MLP layers: the only places Maxout (head-only) can go.
MLP_HEAD_MODELS: tuple[str, ...] = ("lenet", "vgg11", "vgg16")

_IMAGES = Domain("int", low=1, high=MAX_IMAGES)


class DatasetConfig(ConfigModel):
    """Which data to train on; the validation split is taken from the training set."""

    section: ClassVar[str] = "dataset"

    name: Annotated[str, Knob(Domain("str", choices=DATASET_NAMES), search=False)] = Field(
        default="cifar10",
        description="cifar10 or cifar100 (torchvision format), or folder: an image folder or "
        "tarball at path",
    )
    path: Annotated[str | None, Knob(Domain("str"), search=False)] = Field(
        default=None,
        description="name: folder only: its image folder or tarball (CIFAR is where the "
        "worker's --data points)",
    )
    val_size: Annotated[int, Knob(_IMAGES, search=False)] = Field(
        default=5000,
        description=f"images held out of train (CIFAR: below {CIFAR_TRAIN_IMAGES}, its training "
        "set)",
    )
    train_subset: Annotated[int | None, Knob(_IMAGES, search=False)] = Field(
        default=None,
        description="train on only this many of the images left after val_size (CIFAR: at "
        f"most {CIFAR_TRAIN_IMAGES} − val_size); null = all",
    )
    split_seed: Annotated[int, Knob(Domain("int", low=0, high=INT32_MAX), search=False)] = Field(
        default=0, description="seed of the stratified validation split and of the train subset"
    )

    @model_validator(mode="after")
    def _folder_needs_path(self) -> DatasetConfig:
        if self.name == "folder" and not (self.path or "").strip():
            raise ValueError("dataset 'folder' needs a path")
        return self


class ModelConfig(ConfigModel):
    """Network architecture (name from MODEL_NAMES) and width multiplier."""

    section: ClassVar[str] = "model"

    name: Annotated[str, Knob(Domain("str", choices=MODEL_NAMES))] = Field(
        default="resnet18", description="network architecture"
    )
    width: Annotated[float, Knob(Domain("float", low=0.0, low_open=True, high=8.0))] = Field(
        default=1.0, description="channel width multiplier"
    )


@dataclass(frozen=True)
class ResolvedActivation:
    """An activation with every default filled in: what the modules are built from."""

    family: Family
    params: dict[str, float]
    options: dict[str, str | int]
    trainable: dict[str, bool]
    scope: Scope


class ActivationConfig(BaseModel):
    """One trial's activation: family (or alias), values, options, scope and init (JSON-ready).

    The family and its defaults are resolved once, when the config is validated (`resolved`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = Field(description="family name or alias (see docs/activations.md)")
    params: dict[str, float] = Field(default_factory=dict, description="numeric parameters")
    options: dict[str, int | str] = Field(
        default_factory=dict, description="form, basis, degrees m/n/k/l, approximate, ..."
    )
    scope: Scope | None = Field(default=None, description="None: the family's default scope")
    trainable: dict[str, bool] = Field(default_factory=dict)
    preset: str | None = None
    init_target: str | None = Field(default=None, description="PAU/OPAU: function to fit")
    init_interval: tuple[float, float] | None = Field(
        default=None, description="PAU/OPAU: fit interval (default [-3, 3])"
    )
    clamp: float | None = Field(default=None, description="PAU/OPAU: clamp |x| to this first")
    _resolved: ResolvedActivation = PrivateAttr()

    @model_validator(mode="after")
    def _resolve(self) -> ActivationConfig:
        family, params, options, trainable = resolve_settings(
            self.family, self.params, self.options, self.trainable, self.preset
        )
        if self.scope is not None and self.scope not in family.scopes:
            raise ValueError(
                f"{family.name} supports scopes {', '.join(family.scopes)}, not {self.scope!r}"
            )
        if (self.init_target is not None or self.init_interval is not None) and not family.fit_init:
            raise ValueError(f"{family.name} takes no init_target / init_interval")
        if self.init_target is not None and self.init_target not in FIT_TARGETS:
            raise ValueError(
                f"unknown init_target {self.init_target!r}; valid: {', '.join(FIT_TARGETS)}"
            )
        if self.init_interval is not None and not self.init_interval[0] < self.init_interval[1]:
            raise ValueError("init_interval must be [low, high] with low < high")
        if self.clamp is not None and not (family.polynomial and self.clamp > 0):
            raise ValueError(f"{family.name} takes no input clamp (only PAU/OPAU, clamp > 0)")
        scope = self.scope or family.default_scope
        self._resolved = ResolvedActivation(family, params, options, trainable, scope)
        return self

    @property
    def resolved(self) -> ResolvedActivation:
        """The family with its defaults, the preset and the alias applied (computed once)."""
        return self._resolved


class TrialConfig(ConfigModel):
    """One trial: data, model, training, activation, the first seed, seeds and time limit."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    activation: ActivationConfig = Field(default_factory=lambda: ActivationConfig(family="relu"))
    seed: Annotated[int, Knob(Domain("int", low=0, high=INT32_MAX))] = Field(
        default=0, description="training seed of the first run"
    )
    seeds: Annotated[int, Knob(Domain("int", low=1, high=MAX_SEEDS))] = Field(
        default=1, description="seeds per configuration (each trains with seed + i)"
    )
    timeout_s: Annotated[float | None, Knob(Domain("float", low=0.0, low_open=True))] = Field(
        default=None, description="one seed's wall time in seconds; null = none"
    )

    def canonical(self) -> dict[str, Any]:
        """The config as JSON with every default filled in: equal ones train the same."""
        return self.model_dump(mode="json")

    def canonical_json(self) -> str:
        """`canonical` as one sorted, compact JSON text (a cache key)."""
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    def with_seed(self, seed: int) -> TrialConfig:
        """The same config training one seed, `seed`."""
        return self.model_copy(update={"seed": seed, "seeds": 1})

    def configuration_key(self, data_checksum: str, code_version: str) -> str:
        """What makes two trainings the same, but the seed: the canonical config without its
        seeds and time limit (which do not change what one seed learns), the data, the code."""
        configuration = {k: v for k, v in self.canonical().items() if k not in _NOT_TRAINING}
        return _digest({"config": configuration, "data": data_checksum, "code": code_version})

    def training_key(self, seed: int, data_checksum: str, code_version: str) -> str:
        """The exact key of one training: this configuration with `seed` (EVIDENCE.md's unit)."""
        configuration = self.configuration_key(data_checksum, code_version)
        return _digest({"configuration": configuration, "seed": seed})


# Top-level keys that say how many seeds and how long, not what one training learns.
_NOT_TRAINING = ("seed", "seeds", "timeout_s")


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def parse_trial_config(value: Mapping[str, Any] | TrialConfig) -> TrialConfig:
    """A stored or suggested trial config, validated (ConfigError names each bad field)."""
    if isinstance(value, TrialConfig):
        return value
    config: TrialConfig = parse(TrialConfig, dict(value))
    return config
