"""The trial contract: every option of one trial, typed once (torch-free).

The study spec's sections, the recipes and the trainer all read these classes; see
`training` (the training options) and `trial` (data, model, activation, the whole config).
"""

from search_space.contract.fields import ConfigError, ConfigModel, Knob, knob_of
from search_space.contract.training import (
    AugmentConfig,
    EmaConfig,
    LookaheadConfig,
    TrainingConfig,
)
from search_space.contract.trial import (
    ActivationConfig,
    DatasetConfig,
    ModelConfig,
    ResolvedActivation,
    TrialConfig,
    parse_trial_config,
)

__all__ = [
    "ActivationConfig",
    "AugmentConfig",
    "ConfigError",
    "ConfigModel",
    "DatasetConfig",
    "EmaConfig",
    "Knob",
    "LookaheadConfig",
    "ModelConfig",
    "ResolvedActivation",
    "TrainingConfig",
    "TrialConfig",
    "knob_of",
    "parse_trial_config",
]
