"""The spec's names and bounds: samplers, pruners, counts, caps. Torch-free constants.

The bounds of what a trial trains (epochs, images, seeds, models, datasets) belong to the trial
contract (search_space.contract) and are re-exported here with the spec's own.
"""

from __future__ import annotations

from search_space.contract.training import (
    MAX_EPOCHS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    TTA_MODES,
)
from search_space.contract.trial import (
    CIFAR_TRAIN_IMAGES,
    DATASET_NAMES,
    INT32_MAX,
    MAX_IMAGES,
    MAX_SEEDS,
    MLP_HEAD_MODELS,
    MODEL_NAMES,
    SEED_RANGE,
)

SPEC_VERSION = 1
SAMPLER_NAMES: tuple[str, ...] = ("tpe", "random", "cmaes", "qmc", "grid", "nsga2")
PRUNER_NAMES: tuple[str, ...] = ("median", "percentile", "hyperband", "successive_halving", "none")
# The fields each sampler and pruner reads (search_space.suggest.make_sampler / make_pruner),
# besides `name` and the sampler's `seed`, which all read. A new spec that sets one the chosen
# sampler or pruner does not read to anything but its default is refused (SUBMISSION).
SAMPLER_FIELDS: dict[str, tuple[str, ...]] = {
    "tpe": ("constant_liar", "multivariate", "group", "n_startup_trials"),
    "random": (),
    "cmaes": ("n_startup_trials",),
    "qmc": ("qmc_type",),
    "grid": (),
    "nsga2": (),
}
PRUNER_FIELDS: dict[str, tuple[str, ...]] = {
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
    "percentile": ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
    "successive_halving": ("min_resource", "reduction_factor", "min_early_stopping_rate"),
    "none": (),
}
# What a study optimises (`objectives`): validation accuracy first, then at most one measured
# cost, minimised (workers.cost): the training step time relative to ReLU on the same model and
# worker, or the model's parameter count. Optuna's pruners and CMA-ES are single-objective only.
OBJECTIVES: tuple[str, ...] = ("accuracy", "step_time", "params")
COST_OBJECTIVES: tuple[str, ...] = ("step_time", "params")
MULTI_OBJECTIVE_SAMPLERS: tuple[str, ...] = ("tpe", "random", "qmc", "grid", "nsga2")
# Bounds of the spec's counts and seeds. Our integer columns are 32-bit (service/db/models.py:
# as_studies.priority, n_trials), Optuna's and numpy's seeds 32-bit unsigned, torch's 64-bit:
# a value outside these is refused at submission, naming the field and the range. The upper
# bounds of timeouts, n_startup_trials and the pruner's counts are caps (cap=True): a larger
# value ran harmlessly before them (a limit never reached, a step never taken), so only a new
# spec is held to them.
MAX_TRIALS = 100_000  # n_trials: a study's budget of trials
PRIORITY_RANGE = (-(2**31), INT32_MAX)  # as_studies.priority; higher runs first
MAX_GRID_POINTS = 1_000_000  # distinct configurations of a grid study
MAX_TRIAL_S = 30 * 86_400  # timeouts.trial_s: 30 days
MAX_STUDY_S = 366 * 86_400  # timeouts.study_s: a year
# description: free text, shown with the study and sent in every item of a study list. A cap
# (new specs only): a longer one was stored and shown harmlessly.
MAX_DESCRIPTION_CHARS = 10_000
# Activation entry keys that are not family parameters or options.
ENTRY_KEYS: tuple[str, ...] = (
    "scope",
    "trainable",
    "preset",
    "init_target",
    "init_interval",
    "clamp",
)

__all__ = [
    "CIFAR_TRAIN_IMAGES",
    "COST_OBJECTIVES",
    "DATASET_NAMES",
    "ENTRY_KEYS",
    "INT32_MAX",
    "MAX_DESCRIPTION_CHARS",
    "MAX_EPOCHS",
    "MAX_GRID_POINTS",
    "MAX_IMAGES",
    "MAX_SEEDS",
    "MAX_STUDY_S",
    "MAX_TRIALS",
    "MAX_TRIAL_S",
    "MLP_HEAD_MODELS",
    "MODEL_NAMES",
    "MULTI_OBJECTIVE_SAMPLERS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRIORITY_RANGE",
    "PRUNER_FIELDS",
    "PRUNER_NAMES",
    "SAMPLER_FIELDS",
    "SAMPLER_NAMES",
    "SCHEDULES",
    "SEED_RANGE",
    "SPEC_VERSION",
    "TTA_MODES",
]
