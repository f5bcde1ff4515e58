"""Study spec validation, round trips, define-by-run suggestions, baselines, sampler and pruner."""

from __future__ import annotations

import copy
import itertools
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

from search_space.build import ActivationConfig, ActivationFactory
from search_space.contract import EmaConfig, LookaheadConfig, TrainingConfig
from search_space.curves import prescreen
from search_space.grid_sampler import SpecGrid, SpecGridSampler, grid_search_space
from search_space.recipes import PROXY_RECIPE, STANDARD_RECIPE, recipe
from search_space.registry import ALIASES, FAMILIES
from search_space.samplers import MissingPackage, PerTrialSeedSampler, make_pruner, make_sampler
from search_space.spec import (
    BETAS_DEFAULT,
    EMA_DEFAULTS,
    LOOKAHEAD_DEFAULTS,
    MAX_TRIALS,
    MODEL_NAMES,
    PRIORITY_RANGE,
    PRUNER_FIELDS,
    SAMPLER_FIELDS,
    ModelSpec,
    PrunerSpec,
    SamplerSpec,
    SpecError,
    StudySpec,
    TrainingSpec,
    grid_size,
    parse_spec,
)
from search_space.suggest import baseline_params, config_family, suggest_config, trial_budget

QUICKSTART = """
version: 1
name: quickstart
description: ""
dataset: {name: cifar10, val_size: 5000, train_subset: null, split_seed: 0}
model: resnet18
training:
  epochs: 10
  batch_size: 512
  optimizer: sgd
  lr: {low: 0.01, high: 0.4, log: true}
  momentum: 0.9
  nesterov: true
  weight_decay: 5.0e-4
  schedule: onecycle
  warmup_epochs: 1.0
  label_smoothing: 0.0
  augment: {crop_padding: 4, flip: true}
  precision: auto
  compile: false
activations:
  relu: {}
  smu: {alpha: {low: 0.0, high: 0.5}, mu: {low: 0.5, high: 5.0, log: true}, scope: per_layer,
        trainable: {mu: true, alpha: false}}
  pau: {m: 5, n: 4, form: A, init_target: {choices: [leaky_relu, gelu]}}
  opau: {basis: {choices: [hermite_h, hermite_he]}, k: 5, l: 4}
baselines: [relu]
sampler: {name: tpe, seed: 0, constant_liar: true}
pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 1}
n_trials: 60
seeds: 1
seed: 0
priority: 0
timeouts: {trial_s: 3600}
"""

RESOLVED_KEYS = {"dataset", "model", "training", "activation", "seed", "seeds", "timeout_s"}
ACTIVATION_KEYS = {
    "family", "params", "options", "scope", "trainable", "preset", "init_target",
    "init_interval", "clamp",
}  # fmt: skip


def _all_families_spec() -> dict[str, Any]:
    """Every family and alias, with a searched value wherever the family has one to search."""
    activations: dict[str, Any] = {name: {} for name in [*FAMILIES, *ALIASES]}
    activations["smu"] = {
        "alpha": {"low": 0.0, "high": 0.5},
        "mu": {"low": 0.5, "high": 5.0, "log": True},
        "trainable": {"alpha": True},
        "preset": {"choices": ["classification", "detection"]},
    }
    activations["smu1"] = {
        "mu": {"low": 0.01, "high": 1.0, "log": True},
        "scope": {"choices": ["shared", "per_channel"]},
    }
    activations["pau"] = {
        "m": {"low": 3, "high": 6},
        "n": 4,
        "form": {"choices": ["A", "B", "C"]},
        "init_target": {"choices": ["leaky_relu", "gelu"]},
        "clamp": 8.0,
    }
    activations["opau"] = {
        "basis": {"choices": ["chebyshev_t", "legendre"]},
        "k": 5,
        "l": {"choices": [2, 4]},
    }
    activations["leaky_relu"] = {"negative_slope": {"low": 0.01, "high": 0.3, "log": True}}
    activations["gelu"] = {"approximate": {"choices": ["none", "tanh"]}}
    activations["swish"] = {"beta": {"low": 0.5, "high": 2.0, "step": 0.5}}
    activations["acon_c"] = {"p2": {"choices": [0.0, 0.1]}, "scope": "per_layer"}
    activations["maxout"] = {"k": {"low": 2, "high": 4}}
    return {
        "name": "everything",
        "model": "lenet",  # Maxout needs an MLP head
        "training": {"lr": {"low": 0.01, "high": 0.4, "log": True}, "epochs": {"choices": [2, 4]},
                     "augment": {"flip": {"choices": [True, False]}}},
        "activations": activations,
        "baselines": ["relu", "gelu"],
    }  # fmt: skip


def _first_values(spec: StudySpec, key: str) -> dict[str, Any]:
    """FixedTrial params for one family: the first choice / the low end of every range."""
    params: dict[str, Any] = {"activation": key}
    for dim in spec.search_space():
        owner = dim.name.split(".", 1)[0]
        if owner not in ("model", "training") and owner != key:
            continue
        if dim.name == "activation":
            continue
        dist = dim.dist
        params[dim.name] = dist.choices[0] if hasattr(dist, "choices") else dist.low
    return params


def test_quickstart_parses_and_suggests() -> None:
    spec = parse_spec(QUICKSTART)
    names = [d.name for d in spec.search_space()]
    assert names == [
        "training.lr",
        "activation",
        "smu.alpha",
        "smu.mu",
        "pau.init_target",
        "opau.basis",
    ]
    config = suggest_config(
        optuna.trial.FixedTrial(
            {"training.lr": 0.1, "activation": "smu", "smu.alpha": 0.2, "smu.mu": 2.0}
        ),
        spec,
    )
    assert set(config) == RESOLVED_KEYS and set(config["activation"]) == ACTIVATION_KEYS
    assert config["activation"] == {
        "family": "smu", "params": {"alpha": 0.2, "mu": 2.0}, "options": {}, "scope": "per_layer",
        "trainable": {"alpha": False, "mu": True}, "preset": None, "init_target": None,
        "init_interval": None, "clamp": None,
    }  # fmt: skip
    assert config["training"]["lr"] == 0.1 and config["training"]["eval_batch_size"] == 1024
    assert config["model"] == {"name": "resnet18", "width": 1.0}
    assert (config["seed"], config["seeds"], config["timeout_s"]) == (0, 1, 3600)
    json.dumps(config)  # plain JSON
    pau = suggest_config(
        optuna.trial.FixedTrial(
            {"training.lr": 0.1, "activation": "pau", "pau.init_target": "gelu"}
        ),
        spec,
    )["activation"]
    assert pau["options"] == {"m": 5, "n": 4, "form": "A"}
    assert (pau["init_target"], pau["init_interval"]) == ("gelu", [-3.0, 3.0])


def test_json_text_and_mappings_are_accepted() -> None:
    data = yaml.safe_load(QUICKSTART)
    assert parse_spec(json.dumps(data)) == parse_spec(data) == parse_spec(QUICKSTART)


def test_spec_with_every_family_round_trips_and_builds() -> None:
    spec = parse_spec(_all_families_spec())
    dumped = spec.model_dump(mode="json")
    assert parse_spec(dumped).model_dump(mode="json") == dumped
    assert parse_spec(json.dumps(dumped)) == spec
    assert StudySpec.model_json_schema()["title"] == "StudySpec"
    for key in spec.family_keys():
        params = _first_values(spec, key)
        config = suggest_config(optuna.trial.FixedTrial(params), spec)
        assert set(config) == RESOLVED_KEYS
        assert config_family(params) == key
        activation = ActivationConfig.model_validate(config["activation"])
        factory = ActivationFactory(activation)
        width = 4 * factory.width_factor
        module = factory(4)
        shape = (2, width) if factory.head_only else (2, width, 3, 3)
        assert torch.isfinite(module(torch.randn(shape))).all()
        result = prescreen(activation)
        assert result.ok, (key, result.reason)


def test_baselines_are_added_and_enqueued_with_every_branch_parameter() -> None:
    data = yaml.safe_load(QUICKSTART)
    data["baselines"] = ["relu", "gelu", "smu"]
    spec = parse_spec(data)
    assert spec.family_keys()[-1] == "gelu"  # added automatically
    params = baseline_params(spec)
    assert params == [
        {"activation": "relu"},
        {"activation": "gelu"},
        {"activation": "smu", "smu.alpha": 0.25, "smu.mu": 1.0},
    ]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(spec), pruner=make_pruner(spec)
    )
    for p in params:
        study.enqueue_trial(p)
    configs: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        configs.append(suggest_config(trial, spec))
        return 0.5

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an out-of-range enqueued value would warn
        study.optimize(objective, n_trials=5)
    assert [c["activation"]["family"] for c in configs[:3]] == ["relu", "gelu", "smu"]
    for trial, expected in zip(study.trials[:3], params, strict=True):
        assert {k: v for k, v in trial.params.items() if not k.startswith("training.")} == expected
    assert configs[2]["activation"]["params"] == {"alpha": 0.25, "mu": 1.0}


def test_baseline_defaults_are_moved_into_the_spec_range() -> None:
    spec = parse_spec({"name": "b", "activations": {"smu": {"mu": {"low": 2.0, "high": 5.0, "step": 0.5}}},
                       "baselines": ["smu"]})  # fmt: skip
    assert baseline_params(spec) == [{"smu.mu": 2.0}]  # single family: no "activation" param
    assert config_family({"smu.mu": 2.0}, spec) == "smu"
    assert config_family({}, spec) == "smu"


def test_single_family_has_no_activation_parameter() -> None:
    spec = parse_spec({"name": "one", "activations": {"gelu": {}}})
    assert spec.search_space() == []
    config = suggest_config(optuna.trial.FixedTrial({}), spec)
    assert config["activation"]["family"] == "gelu"


def test_ema_and_tta_reach_the_resolved_config_as_the_trainer_reads_them() -> None:
    data = _mutated("training.ema", {"decay": 0.99, "start_epoch": 2})
    data["training"]["tta"] = "flip"
    spec = parse_spec(data)
    assert [d.name for d in spec.search_space() if d.name.startswith("training.")] == [
        "training.lr"
    ]  # neither is an Optuna parameter
    training = suggest_config(
        optuna.trial.FixedTrial({"training.lr": 0.1, "activation": "relu"}), spec
    )["training"]
    # Every key stated, the missing one at its default: the config says what was evaluated.
    assert training["ema"] == {"decay": 0.99, "start_epoch": 2, "every": 1}
    assert training["tta"] == "flip"
    assert json.loads(json.dumps(training)) == training
    resolved = TrainingConfig.model_validate(training)
    assert (resolved.ema, resolved.tta) == (EmaConfig(decay=0.99, start_epoch=2, every=1), "flip")
    assert parse_spec(spec.model_dump(mode="json")) == spec

    plain = parse_spec(QUICKSTART)
    default = suggest_config(
        optuna.trial.FixedTrial({"training.lr": 0.1, "activation": "relu"}), plain
    )["training"]
    assert (default["ema"], default["tta"]) == (None, "none")
    resolved = TrainingConfig.model_validate(default)
    assert (resolved.ema, resolved.tta) == (None, "none")
    empty = parse_spec(_mutated("training.ema", {})).training.ema
    assert empty == EMA_DEFAULTS  # {} = the defaults, as in the trainer


def test_the_spec_defaults_are_the_contracts_the_trainer_reads() -> None:
    import workers.train

    assert EmaConfig().model_dump() == EMA_DEFAULTS
    assert LookaheadConfig().model_dump() == LOOKAHEAD_DEFAULTS
    assert TrainingConfig().betas == BETAS_DEFAULT
    assert workers.train.TrainingConfig is TrainingConfig  # one class, not a copy to keep equal
    spec_training = parse_spec({"name": "d", "activations": {"relu": {}}}).training
    contract = TrainingConfig().model_dump()
    contract["augment"] = {k: contract["augment"][k] for k in ("crop_padding", "flip")}
    assert spec_training.model_dump() == {**contract, "betas": tuple(contract["betas"])}


def test_lookahead_betas_and_bias_lr_scale_reach_the_resolved_config() -> None:
    data = _mutated("training.lookahead", {"every": 2})
    data["training"].update(
        optimizer="adamw", betas=[0.8, 0.99], bias_lr_scale={"low": 1.0, "high": 64.0, "log": True}
    )
    spec = parse_spec(data)
    assert spec.training.lookahead == {**LOOKAHEAD_DEFAULTS, "every": 2}  # defaults filled in
    searched = [d.name for d in spec.search_space() if d.name.startswith("training.")]
    assert searched == ["training.lr", "training.bias_lr_scale"]  # bias_lr_scale only
    trial = optuna.trial.FixedTrial(
        {"training.lr": 0.1, "training.bias_lr_scale": 16.0, "activation": "relu"}
    )
    training = suggest_config(trial, spec)["training"]
    assert training["lookahead"] == {"start_epoch": 3, "every": 2, "decay": 0.95, "power": 3.0}
    assert (training["betas"], training["bias_lr_scale"]) == ([0.8, 0.99], 16.0)
    assert json.loads(json.dumps(training)) == training
    resolved = TrainingConfig.model_validate(training)
    assert resolved.lookahead == LookaheadConfig(start_epoch=3, every=2, decay=0.95, power=3.0)
    assert (resolved.betas, resolved.bias_lr_scale) == ((0.8, 0.99), 16.0)
    assert parse_spec(spec.model_dump(mode="json")) == spec

    plain = suggest_config(
        optuna.trial.FixedTrial({"training.lr": 0.1, "activation": "relu"}), parse_spec(QUICKSTART)
    )["training"]
    assert (plain["lookahead"], plain["betas"], plain["bias_lr_scale"]) == (None, [0.9, 0.999], 1.0)
    resolved = TrainingConfig.model_validate(plain)
    assert (resolved.lookahead, resolved.betas, resolved.bias_lr_scale) == (
        None, (0.9, 0.999), 1.0,
    )  # fmt: skip


def test_grad_clip_is_off_by_default_searchable_and_reaches_the_trainer() -> None:
    relu = optuna.trial.FixedTrial({"training.lr": 0.1, "activation": "relu"})
    plain = suggest_config(relu, parse_spec(QUICKSTART))["training"]
    assert plain["grad_clip"] is None and TrainingConfig.model_validate(plain).grad_clip is None

    fixed = parse_spec(_mutated("training.grad_clip", 2))
    assert fixed.training.grad_clip == 2.0  # an integer is a number
    assert "training.grad_clip" not in [d.name for d in fixed.search_space()]
    assert suggest_config(relu, fixed)["training"]["grad_clip"] == 2.0

    searched = parse_spec(_mutated("training.grad_clip", {"low": 0.5, "high": 8.0, "log": True}))
    assert [d.name for d in searched.search_space()][:2] == ["training.lr", "training.grad_clip"]
    trial = optuna.trial.FixedTrial(
        {"training.lr": 0.1, "training.grad_clip": 2.5, "activation": "relu"}
    )
    training = suggest_config(trial, searched)["training"]
    assert training["grad_clip"] == 2.5
    assert TrainingConfig.model_validate(training).grad_clip == 2.5
    assert parse_spec(searched.model_dump(mode="json")) == searched


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "0.0 is outside the domain (0, inf)"),
        (-1.0, "outside the domain (0, inf)"),
        ({"low": 0.0, "high": 2.0}, "0.0 is outside the domain (0, inf)"),
        ({"choices": [None, 1.0]}, "valid number"),  # off is not a choice: search values > 0
        ("1", "valid number"),
        (True, "valid number"),
        (float("inf"), "expected a finite number"),
    ],
)
def test_bad_grad_clip_values_are_refused(value: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated("training.grad_clip", value))
    assert all(e["loc"].startswith("training.grad_clip") for e in info.value.errors)
    assert any(message in e["msg"] for e in info.value.errors), info.value.errors


# -- model recipes ------------------------------------------------------------------------------
def _proxy_spec(training: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "screen", "model": {"name": "proxy"},
                            "activations": {"relu": {}, "smu": {}}, **changes}  # fmt: skip
    if training is not None:
        data["training"] = training
    return data


@pytest.mark.parametrize("model", ["proxy", {"name": "proxy", "width": 1.5}], ids=["name", "map"])
def test_a_proxy_study_without_training_takes_the_proxy_recipe(model: Any) -> None:
    spec = parse_spec(_proxy_spec(model=model))
    training = spec.training.model_dump(mode="json")
    # Every recipe value the spec has a field for (pad_mode is the trainer's default anyway).
    expected = {k: v for k, v in PROXY_RECIPE.items() if k != "augment"}
    assert {k: training[k] for k in expected} == expected
    assert training["augment"] == {"crop_padding": 2, "flip": True}
    assert training["epochs"] == 10 and training["lookahead"] == PROXY_RECIPE["lookahead"]
    # The stored (dumped) spec states these values and parses back to the same spec.
    assert parse_spec(spec.model_dump(mode="json")) == spec
    assert parse_spec(spec) == spec


def test_the_resolved_config_of_a_proxy_study_is_the_proxy_recipe() -> None:
    spec = parse_spec(_proxy_spec())
    config = suggest_config(optuna.trial.FixedTrial({"activation": "smu"}), spec)
    assert config["model"]["name"] == "proxy"
    assert json.loads(json.dumps(config)) == config
    trained = TrainingConfig.model_validate(config["training"])
    assert trained == TrainingConfig.model_validate(recipe("proxy"))


def test_fields_a_proxy_study_gives_win_over_the_recipe() -> None:
    lr = {"low": 0.5, "high": 3.0, "log": True}
    spec = parse_spec(_proxy_spec({"epochs": 8, "lr": lr, "lookahead": None,
                                   "augment": {"crop_padding": 4}}))  # fmt: skip
    training = spec.training
    assert (training.epochs, training.lr.model_dump(exclude_none=True)) == (8, lr)
    assert training.lookahead is None  # null given: off, not the recipe's
    assert (training.augment.crop_padding, training.augment.flip) == (4, True)
    # The rest is the recipe's.
    rest = (training.batch_size, training.schedule, training.bias_lr_scale)
    assert rest == (1024, "linear", 64.0)
    assert [d.name for d in spec.search_space()] == ["training.lr", "activation"]
    config = suggest_config(
        optuna.trial.FixedTrial({"training.lr": 2.0, "activation": "relu"}), spec
    )
    assert (config["training"]["lr"], config["training"]["momentum"]) == (2.0, 0.85)
    # A spec built from models, as the API's body: only the fields set count as given.
    given = {"model": ModelSpec(name="proxy"), "training": TrainingSpec(lr=0.5)}
    built = StudySpec.model_validate({"name": "b", "activations": {"relu": {}}, **given})
    assert (built.training.lr, built.training.batch_size) == (0.5, 1024)


@pytest.mark.parametrize(
    "model",
    ["resnet18", {"name": "lenet"}, {"name": {"choices": ["proxy", "resnet18"]}}, None],
    ids=["resnet18", "lenet", "searched", "default"],
)
def test_other_models_keep_the_generic_defaults(model: Any) -> None:
    data: dict[str, Any] = {"name": "g", "activations": {"relu": {}}}
    if model is not None:
        data["model"] = model
    training = parse_spec(data).training
    assert training == TrainingSpec()  # not STANDARD_RECIPE: stored studies rely on these
    assert (training.epochs, training.batch_size, training.lr, training.schedule) == (
        10, 512, 0.1, "onecycle",
    )  # fmt: skip
    assert training.lookahead is None and training.epochs != STANDARD_RECIPE["epochs"]


def test_grid_baselines_of_a_proxy_study_start_from_the_recipe() -> None:
    spec = parse_spec(_proxy_spec({"lr": {"choices": [0.5, 1.4, 3.0]},
                                   "epochs": {"low": 8, "high": 12, "step": 2}},
                                  sampler={"name": "grid"}, baselines=["relu"]))  # fmt: skip
    # Nearest grid values to the recipe's lr 1.5 and epochs 10, not the generic 0.1 and 10.
    assert baseline_params(spec) == [
        {"training.lr": 1.4, "training.epochs": 10, "activation": "relu"}
    ]


def test_recipes_are_fresh_copies_and_the_trainers() -> None:
    import workers.train

    mine = recipe("proxy")
    mine["lookahead"]["every"] = 1
    mine["augment"]["crop_padding"] = 0
    assert PROXY_RECIPE["lookahead"]["every"] == 5 and PROXY_RECIPE["augment"]["crop_padding"] == 2
    # A recipe is its overrides on top of the contract's defaults, every option stated.
    assert recipe("resnet18") == TrainingConfig.model_validate(STANDARD_RECIPE).model_dump(
        mode="json"
    )
    assert recipe("proxy") == TrainingConfig.model_validate(PROXY_RECIPE).model_dump(mode="json")
    assert set(recipe("proxy")) == set(TrainingConfig.model_fields)
    assert workers.train.recipe is recipe


@pytest.mark.parametrize(
    "epochs", [{"choices": [8, 3]}, {"low": 3, "high": 8}, 3], ids=["choices", "range", "fixed"]
)
def test_ema_must_start_before_the_fewest_epochs_a_trial_can_get(epochs: Any) -> None:
    data = _mutated("training.ema", {"start_epoch": 3})
    data["training"]["epochs"] = epochs
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert [e["loc"] for e in info.value.errors] == ["training.ema.start_epoch"]
    assert "must be below epochs (3" in info.value.errors[0]["msg"]
    data["training"]["ema"]["start_epoch"] = 2
    assert parse_spec(data).training.ema["start_epoch"] == 2


@pytest.mark.parametrize(
    ("name", "kind"),
    [("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
     ("qmc", optuna.samplers.QMCSampler)],
)  # fmt: skip
def test_make_sampler(name: str, kind: type) -> None:
    data = yaml.safe_load(QUICKSTART)
    data["sampler"] = {"name": name, "seed": 3}
    sampler = make_sampler(parse_spec(data))
    if isinstance(sampler, PerTrialSeedSampler):  # seeded tpe and random
        sampler = sampler._default
    assert isinstance(sampler, kind)
    data["sampler"] = {"name": name}
    assert isinstance(make_sampler(parse_spec(data)), kind)


def _seeded_run(sampler_name: str, storage: str, reload_every: int) -> list[dict[str, Any]]:
    """Ask-and-tell 12 trials, reloading the study (a fresh sampler) every few trials."""
    data = yaml.safe_load(QUICKSTART)
    data["sampler"] = {"name": sampler_name, "seed": 7, "n_startup_trials": 4}
    spec = parse_spec(data)
    name = optuna.create_study(storage=storage, direction="maximize").study_name
    params = []
    study = None
    for number in range(12):
        if number % reload_every == 0:
            study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec))
        assert study is not None
        trial = study.ask()
        config = suggest_config(trial, spec)
        value = float(config["training"]["lr"] if "lr" in str(trial.params) else 0.0)
        study.tell(trial, value + 0.1 * len(config["activation"]["params"]))
        params.append(trial.params)
    return params


@pytest.mark.parametrize("sampler_name", ["tpe", "random"])
def test_a_seeded_study_proposes_the_same_trials_again(tmp_path: Path, sampler_name: str) -> None:
    # The seed used to be offset at random in every worker process: it reproduced nothing.
    first = _seeded_run(sampler_name, f"sqlite:///{tmp_path / 'a.db'}", reload_every=12)
    again = _seeded_run(sampler_name, f"sqlite:///{tmp_path / 'b.db'}", reload_every=5)
    assert first == again  # same seed and history, reloads or not: the same proposals
    assert len({str(p) for p in first}) == len(first)  # and no stream repeats itself


def test_concurrent_trials_of_one_seed_draw_differently(tmp_path: Path) -> None:
    data = yaml.safe_load(QUICKSTART)
    data["sampler"] = {"name": "random", "seed": 7}
    spec = parse_spec(data)
    storage = f"sqlite:///{tmp_path / 'c.db'}"
    name = optuna.create_study(storage=storage, direction="maximize").study_name
    workers = [
        optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec))
        for _ in range(2)
    ]
    trials = [study.ask() for study in workers]  # two processes, both running at once
    configs = [suggest_config(trial, spec) for trial in trials]
    assert trials[0].params != trials[1].params, configs


def test_tpe_uses_constant_liar_by_default() -> None:
    sampler = make_sampler(parse_spec({"name": "t", "activations": {"relu": {}}}))
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._constant_liar is True


@pytest.mark.parametrize(
    ("sampler", "hidden", "package"),
    [("cmaes", "cmaes", "cmaes"), ("qmc", "scipy.stats.qmc", "scipy")],
)
def test_a_sampler_whose_package_is_missing_says_which_and_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, sampler: str, hidden: str, package: str
) -> None:
    # Optuna imports these lazily, in the middle of some later trial; make_sampler at once.
    spec = parse_spec(_mutated("sampler", {"name": sampler}))
    assert isinstance(make_sampler(spec), optuna.samplers.BaseSampler)  # installed here
    monkeypatch.setitem(sys.modules, hidden, None)  # a machine without it: its import fails
    with pytest.raises(MissingPackage) as info:
        make_sampler(spec)
    assert isinstance(info.value, ModuleNotFoundError) and info.value.package == package
    assert str(info.value).startswith(
        f"this machine lacks the Python package '{package}' that the {sampler} sampler needs: "
        f"pip install {package} (import {hidden}: "
    )
    make_sampler(parse_spec(_mutated("sampler", {"name": "tpe"})))  # the others need neither


def test_grid_sampler_enumerates_discrete_values() -> None:
    spec = parse_spec({
        "name": "g", "sampler": {"name": "grid"},
        "training": {"lr": {"low": 0.1, "high": 0.3, "step": 0.1}, "epochs": {"low": 1, "high": 3}},
        "activations": {"relu": {}, "smu": {"mu": {"choices": [1.0, 2.0]}}},
    })  # fmt: skip
    space = grid_search_space(spec)
    assert space == {"training.lr": [0.1, 0.2, 0.3], "training.epochs": [1, 2, 3],
                     "activation": ["relu", "smu"], "smu.mu": [1.0, 2.0]}  # fmt: skip
    assert isinstance(make_sampler(spec), SpecGridSampler)


def _grid_spec(*, submission: bool = False, **changes: Any) -> StudySpec:
    data = {
        "name": "g", "sampler": {"name": "grid", "seed": 1}, "n_trials": 100,
        "training": {"lr": {"choices": [0.05, 0.2]}, "epochs": {"low": 1, "high": 2}},
        "activations": {"relu": {}, "smu": {"mu": {"choices": [1.0, 2.0, 3.0]}},
                        "gelu": {"approximate": {"choices": ["none", "tanh"]}}},
        "baselines": ["relu", "smu"],
    }  # fmt: skip
    return parse_spec({**data, **changes}, submission=submission)


def _every_configuration(spec: StudySpec) -> set[tuple[tuple[str, Any], ...]]:
    """The distinct configurations by brute force: a family's parameters only within it."""
    space = grid_search_space(spec)
    shared = {k: v for k, v in space.items() if k.split(".")[0] in ("model", "training")}
    out = set()
    for key in spec.family_keys():
        own = {k: v for k, v in space.items() if k.startswith(f"{key}.")}
        names = [*shared, *own]
        for values in itertools.product(*(space[n] for n in names)):
            out.add(
                tuple(sorted({"activation": key, **dict(zip(names, values, strict=True))}.items()))
            )
    return out


def _ask_tell_all(study: optuna.Study, spec: StudySpec, n: int) -> list[dict[str, Any]]:
    """Run n trials the way workers do (ask, suggest, tell), outside study.optimize."""
    out = []
    for _ in range(n):
        trial = study.ask()
        suggest_config(trial, spec)
        study.tell(trial, 0.5)  # raised RuntimeError (study.stop outside optimize) before
        out.append(trial.params)
    return out


def test_grid_counts_each_family_configuration_once_and_caps_the_budget() -> None:
    spec = _grid_spec()
    # lr × epochs × (relu + smu.mu + gelu.approximate) = 2 × 2 × (1 + 3 + 2); Optuna's plain
    # product (activation × smu.mu × gelu.approximate) would have run relu 6 times per value.
    assert grid_size(spec) == len(_every_configuration(spec)) == 24
    assert SpecGrid(spec).size == 24
    assert trial_budget(spec) == 24  # n_trials 100: the grid is searched once, then complete
    assert trial_budget(_grid_spec(n_trials=10)) == 10
    assert trial_budget(parse_spec(QUICKSTART)) == 60  # other samplers: n_trials
    grid = SpecGrid(spec)
    points = [grid.point(i) for i in range(grid.size)]
    assert {tuple(sorted(p.items())) for p in points} == _every_configuration(spec)
    assert all(grid.index_of(p) == i for i, p in enumerate(points))


def test_grid_baselines_pin_every_parameter_on_the_grid_and_take_their_configuration() -> None:
    spec = _grid_spec()
    baselines = baseline_params(spec)
    # Training fields at their spec defaults' nearest grid values (lr 0.1 -> 0.05, epochs
    # 10 -> 2), family parameters at the registry defaults (smu mu 1.0).
    assert baselines == [
        {"training.lr": 0.05, "training.epochs": 2, "activation": "relu"},
        {"training.lr": 0.05, "training.epochs": 2, "activation": "smu", "smu.mu": 1.0},
    ]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(spec))
    for params in baselines:
        study.enqueue_trial(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an out-of-range or off-grid fixed value would warn
        ran = _ask_tell_all(study, spec, trial_budget(spec))
    assert ran[:2] == baselines
    assert {tuple(sorted(p.items())) for p in ran} == _every_configuration(spec)  # each once
    assert isinstance(study.sampler, SpecGridSampler) and study.sampler.is_exhausted(study)
    # Past the grid (n_trials larger elsewhere): a repeat, never an error.
    again = _ask_tell_all(study, spec, 1)[0]
    assert tuple(sorted(again.items())) in _every_configuration(spec)


def test_grid_workers_with_their_own_samplers_take_different_configurations() -> None:
    # Every worker process has its own sampler (and, from the worker, its own seed): they must
    # agree on what each configuration index means, and asks in flight must not collide.
    spec = _grid_spec()
    storage = optuna.storages.InMemoryStorage()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = optuna.create_study(storage=storage, direction="maximize").study_name
    workers = [
        optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(
            spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"seed": seed})})
        ))
        for seed in (11, 12, 13)
    ]  # fmt: skip
    ran: list[dict[str, Any]] = []
    while len(ran) < grid_size(spec):
        in_flight = [(w, w.ask()) for w in workers[: grid_size(spec) - len(ran)]]
        for _, trial in in_flight:
            suggest_config(trial, spec)
        for worker, trial in in_flight:
            worker.tell(trial, 0.5)
            ran.append(trial.params)
    assert {tuple(sorted(p.items())) for p in ran} == _every_configuration(spec)


def test_grid_with_too_many_configurations_is_refused_when_new() -> None:
    training = {"epochs": {"low": 1, "high": 10_000}, "batch_size": {"low": 1, "high": 1000}}
    with pytest.raises(SpecError) as info:
        _grid_spec(training=training, submission=True)
    (error,) = info.value.errors
    assert error["loc"] == "sampler.name" and "60000000 configurations" in error["msg"]
    # A grid study stored before the cap runs: the grid is indexed, never listed.
    big = _grid_spec(training=training)
    assert grid_size(big) == 60_000_000
    assert SpecGrid(big).point(59_999_999)["training.epochs"] == 10_000


@pytest.mark.parametrize(
    ("name", "kind"),
    [("median", optuna.pruners.MedianPruner), ("percentile", optuna.pruners.PercentilePruner),
     ("hyperband", optuna.pruners.HyperbandPruner),
     ("successive_halving", optuna.pruners.SuccessiveHalvingPruner), ("none", optuna.pruners.NopPruner)],
)  # fmt: skip
def test_make_pruner(name: str, kind: type) -> None:
    spec = parse_spec({"name": "p", "activations": {"relu": {}}, "pruner": {"name": name}})
    assert isinstance(make_pruner(spec), kind)


# -- invalid specs ------------------------------------------------------------------------------
def _mutated(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(yaml.safe_load(QUICKSTART))
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return data


_DELETE = object()

INVALID = [
    (
        "activations.foo",
        {},
        "activations.foo",
        "unknown activation family 'foo'; valid names: relu",
    ),
    ("activations.smu.alpha", {"low": 0.5, "high": 0.1}, "activations.smu.alpha", "empty range"),
    ("activations.smu.beta", 1.0, "activations.smu.beta", "smu has no parameter or option 'beta'"),
    ("activations.smu.mu", -1.0, "activations.smu.mu", "outside the domain"),
    ("activations.smu.mu", "fast", "activations.smu.mu", "expected a number"),
    ("activations.smu.scope", "global", "activations.smu.scope", "per_layer"),
    ("activations.smu.preset", "nope", "activations.smu.preset", "classification"),
    ("activations.smu.trainable", {"beta": True}, "activations.smu.trainable.beta", "no trainable"),
    ("activations.pau.form", "D", "activations.pau.form", "not one of A, B, C, unsafe"),
    ("activations.pau.m", 9, "activations.pau.m", "outside the domain"),
    ("activations.pau.m", {"low": 2.5, "high": 4}, "activations.pau.m", "integer"),
    ("activations.relu.clamp", 3.0, "activations.relu.clamp", "no clamp"),
    ("activations.frelu", {"scope": "shared"}, "activations.frelu.scope", "per_channel"),
    (
        "activations.leaky_relu",
        {"trainable": {"negative_slope": True}},
        "activations.leaky_relu.trainable.negative_slope",
        "cannot be trainable",
    ),
    ("activations.hp1", {"basis": "legendre"}, "activations.hp1.basis", "hp1 fixes basis"),
    ("activations.maxout", {}, "activations.maxout", "MLP heads only"),
    ("activations.rrelu", {"lower": 0.4, "upper": 0.2}, "activations.rrelu.lower", "lower must be"),
    ("activations", {}, "activations", "at least 1"),
    ("training.epochs", "ten", "training.epochs", "integer"),
    ("training.epochs", {"low": 1.5, "high": 3}, "training.epochs", "integer low and high"),
    (
        "training.lr",
        {"low": 0.0, "high": 1.0, "log": True},
        "training.lr",
        "log range needs low > 0",
    ),
    (
        "training.lr",
        {"low": 0.1, "high": 0.2, "step": 0.05, "log": True},
        "training.lr",
        "log and step",
    ),
    ("training.optimizer", "adam", "training.optimizer", "sgd, adamw"),
    ("training.optimizer", {"low": 1, "high": 2}, "training.optimizer", "not a range"),
    ("training.momentum", 1.5, "training.momentum", "outside the domain"),
    ("training.augment.flip", {"choices": [True, True]}, "training.augment.flip", "distinct"),
    ("training.warmup", 1.0, "training.warmup", "unknown field"),
    ("training.tta", "mirror", "training.tta", "'mirror' is not one of none, flip"),
    ("training.tta", {"choices": ["none", "flip"]}, "training.tta", "tta cannot be searched"),
    ("training.ema", {"choices": [None, {}]}, "training.ema", "ema cannot be searched"),
    ("training.ema", 0.99, "training.ema", "give one mapping with some of {decay, start_epoch"),
    ("training.ema.decay", 1.0, "training.ema.decay", "outside the domain [0, 1)"),
    ("training.ema.decay", True, "training.ema.decay", "expected a number"),
    (
        "training.ema.decay",
        {"low": 0.9, "high": 0.999},
        "training.ema.decay",
        "cannot be searched: give one value in [0, 1)",
    ),
    ("training.ema.every", 0, "training.ema.every", "outside the domain [1, inf)"),
    ("training.ema.start_epoch", 1.5, "training.ema.start_epoch", "expected an integer"),
    ("training.ema.start_epoch", 10, "training.ema.start_epoch", "below epochs (10)"),
    ("training.ema.power", 3.0, "training.ema.power", "unknown field"),
    (
        "training.lookahead",
        {"choices": [None, {"every": 5}]},
        "training.lookahead",
        "lookahead cannot be searched",
    ),
    ("training.lookahead", True, "training.lookahead", "give one mapping with some of"),
    ("training.lookahead.decay", 1.0, "training.lookahead.decay", "outside the domain [0, 1)"),
    (
        "training.lookahead.decay",
        {"low": 0.9, "high": 0.99},
        "training.lookahead.decay",
        "cannot be searched: give one value in [0, 1)",
    ),
    ("training.lookahead.every", 0, "training.lookahead.every", "outside the domain [1, inf)"),
    ("training.lookahead.start_epoch", -1, "training.lookahead.start_epoch", "outside"),
    ("training.lookahead.power", -0.5, "training.lookahead.power", "outside the domain [0, inf)"),
    ("training.lookahead.decoy", 0.9, "training.lookahead.decoy", "unknown field"),
    ("training.bias_lr_scale", 0.0, "training.bias_lr_scale", "outside the domain (0, inf)"),
    ("training.bias_lr_scale", {"low": 0, "high": 8}, "training.bias_lr_scale", "outside"),
    ("training.bias_lr_scale", "fast", "training.bias_lr_scale", "valid number"),
    ("training.betas", {"low": 0.8, "high": 0.9}, "training.betas", "betas cannot be searched"),
    ("training.betas", [0.9], "training.betas", "cannot be [0.9]: give one list of 2 numbers"),
    ("training.betas", [0.9, 1.0], "training.betas", "has item 2 = 1.0"),
    ("training.betas", [True, 0.99], "training.betas", "has item 1 = True"),
    ("model", "resnet1000", "model.name", "not one of resnet18"),
    ("sampler.name", "bogus", "sampler.name", "'tpe'"),
    ("pruner.name", "bogus", "pruner.name", "'median'"),
    ("pruner.percentile", 120, "pruner.percentile", "less than 100"),
    ("sampler.name", "grid", "sampler.name", "training.lr"),
    ("dataset.name", "folder", "dataset", "needs a path"),
    ("baselines", ["nope"], "baselines.0", "unknown activation family"),
    ("name", _DELETE, "name", "required"),
    ("name", "", "name", "at least 1 character"),
    ("version", 2, "version", "1"),
    ("trainig", {}, "trainig", "unknown field"),
]


@pytest.mark.parametrize(
    ("path", "value", "loc", "message"),
    INVALID,
    ids=[i[0] + "-" + str(n) for n, i in enumerate(INVALID)],
)
def test_invalid_specs_name_the_field(path: str, value: Any, loc: str, message: str) -> None:
    data = _mutated(path, value)
    if path == "activations.maxout":
        data["activations"]["maxout"] = {}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    errors = info.value.errors
    assert isinstance(info.value, ValueError)
    assert any(e["loc"] == loc and message in e["msg"] for e in errors), errors


# Checks added since the first release that refuse only what the code ran harmlessly or ignored:
# a new spec is refused, naming the field; a stored spec holding the value (submitted before the
# check) parses as it is, since every worker re-parses it at every claim (SUBMISSION).
SUBMISSION_ONLY = [
    ("baselines", ["relu", "ReLU"], "baselines.1", "relu is listed twice"),
    ("dataset.path", "/data/cifar", "dataset.path", "path is only for name: folder"),
    ("dataset.path", "", "dataset.path", "path is only for name: folder"),
    ("name", " \t", "name", "name must not be blank"),
    (
        "pruner",
        {"name": "hyperband", "min_resource": 5, "max_resource": 3},
        "pruner.max_resource",
        "at least its min_resource (5)",
    ),
    # The caps: a larger value was a limit never reached or a step never taken.
    ("timeouts.trial_s", 10**12, "timeouts.trial_s", "between 1 and 2592000"),
    ("timeouts.study_s", 10**12, "timeouts.study_s", "between 1 and 31622400"),
    ("sampler.n_startup_trials", 10**9, "sampler.n_startup_trials", "between 0 and 100000"),
    ("pruner.n_startup_trials", 10**9, "pruner.n_startup_trials", "between 0 and 100000"),
    ("pruner.n_warmup_steps", 10**9, "pruner.n_warmup_steps", "between 0 and 10000"),
    ("pruner.interval_steps", 10**9, "pruner.interval_steps", "between 1 and 10000"),
    ("pruner.reduction_factor", 10**9, "pruner.reduction_factor", "between 2 and 10000"),
    (
        "pruner.min_early_stopping_rate",
        10**5,
        "pruner.min_early_stopping_rate",
        "between 0 and 10000",
    ),
    ("pruner.min_resource", 10**9, "pruner.min_resource", "auto or an integer between 1 and"),
    ("pruner.max_resource", 10**9, "pruner.max_resource", "auto or an integer between 1 and"),
]


@pytest.mark.parametrize(
    ("path", "value", "loc", "message"),
    SUBMISSION_ONLY,
    ids=[i[0] + "-" + str(n) for n, i in enumerate(SUBMISSION_ONLY)],
)
def test_checks_of_intent_refuse_a_new_spec_and_spare_a_stored_one(
    path: str, value: Any, loc: str, message: str
) -> None:
    data = _mutated(path, value)
    with pytest.raises(SpecError) as info:
        parse_spec(data, submission=True)
    errors = info.value.errors
    assert any(e["loc"] == loc and message in e["msg"] for e in errors), errors
    stored = parse_spec(data)  # as a worker parses a stored spec
    assert parse_spec(stored.model_dump(mode="json")) == stored
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental warnings
        assert make_sampler(stored) and make_pruner(stored)


@pytest.mark.parametrize(
    ("path", "value", "range_text"),
    [
        ("n_trials", 2**40, "between 1 and 100000"),
        ("n_trials", 100_001, "between 1 and 100000"),
        ("priority", 2**40, "between -2147483648 and 2147483647"),
        ("priority", -(2**31) - 1, "between -2147483648 and 2147483647"),
        ("seeds", 101, "between 1 and 100"),
        ("seed", -1, "between 0 and 2147483647"),
        ("seed", 2**63, "between 0 and 2147483647"),
        ("sampler.seed", 2**32, "between 0 and 2147483647"),
        ("dataset.split_seed", -5, "between 0 and 2147483647"),
        ("training.epochs", 10**9, "[1, 10000]"),
        ("training.epochs", {"low": 1, "high": 10**6}, "[1, 10000]"),
        # Accepted before, then refused by the worker (val_size 0, min_resource 0): refused on
        # every parse. (The caps, absurd values the code ran harmlessly, are SUBMISSION_ONLY.)
        ("dataset.val_size", 0, "between 1 and 10000000"),
        ("dataset.val_size", 10**8, "between 1 and 10000000"),
        ("dataset.train_subset", 0, "between 1 and 10000000"),
        ("dataset.train_subset", 10**8, "between 1 and 10000000"),
        ("timeouts.trial_s", 0, "between 1 and 2592000"),
        ("pruner.interval_steps", 0, "between 1 and 10000"),
        ("pruner.min_resource", 0, "auto or an integer between 1 and 10000"),
        ("pruner.max_resource", -3, "auto or an integer between 1 and 10000"),
        ("pruner.max_resource", "max", "auto or an integer between 1 and 10000"),
        ("pruner.reduction_factor", 1, "between 2 and 10000"),
        ("pruner.min_early_stopping_rate", -1, "between 0 and 10000"),
    ],
)
def test_counts_and_seeds_are_bounded_naming_field_and_range(
    path: str, value: Any, range_text: str
) -> None:
    # Unbounded before: a huge priority or n_trials passed the spec and overflowed a 32-bit
    # column later; a huge seed or epoch count failed only inside a worker.
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated(path, value))
    assert [e["loc"] for e in info.value.errors] == [path]
    assert range_text in info.value.errors[0]["msg"]
    assert path in str(info.value)


def test_bounds_fit_the_database_columns() -> None:
    from service.db.models import Study  # the columns the spec's bounds protect

    for column in ("priority", "n_trials"):
        assert type(Study.__table__.c[column].type).__name__ == "Integer"  # 32-bit
    int32 = (-(2**31), 2**31 - 1)
    assert int32[0] <= PRIORITY_RANGE[0] and PRIORITY_RANGE[1] <= int32[1]
    assert 1 <= MAX_TRIALS <= int32[1]
    edges = {"n_trials": MAX_TRIALS, "priority": PRIORITY_RANGE[1], "seeds": 100,
             "seed": 2**31 - 1}  # fmt: skip
    spec = parse_spec({**_mutated("priority", PRIORITY_RANGE[0]), **edges})
    assert (spec.n_trials, spec.priority) == (MAX_TRIALS, PRIORITY_RANGE[1])
    schema = StudySpec.model_json_schema()["properties"]["n_trials"]
    assert (schema["minimum"], schema["maximum"]) == (1, MAX_TRIALS)


def test_several_errors_are_reported_together() -> None:
    data = _mutated("training.epochs", 0)
    data["activations"]["smu"]["mu"] = 0
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert {e["loc"] for e in info.value.errors} == {"training.epochs", "activations.smu.mu"}


def test_unparsable_text_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="YAML"):
        parse_spec("name: [unclosed")
    with pytest.raises(SpecError, match="mapping"):
        parse_spec("- just\n- a list")


def test_model_names_are_one_constant() -> None:
    for name in MODEL_NAMES:
        assert (
            parse_spec({"name": "m", "model": name, "activations": {"relu": {}}}).model.name == name
        )
    spec = parse_spec({"name": "m", "model": {"name": "proxy", "width": {"low": 0.5, "high": 2.0}},
                       "activations": {"relu": {}}})  # fmt: skip
    assert [d.name for d in spec.search_space()] == ["model.width"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("training.lr", True),
        ("training.epochs", True),
        ("training.epochs", 10.5),
        ("training.batch_size", "64"),
        ("training.nesterov", "yes"),
        ("training.optimizer", 1),
        ("training.lr", {"low": True, "high": 0.5}),
    ],
)
def test_mistyped_values_are_refused_not_coerced(path: str, value: Any) -> None:
    # `lr: true` used to become 1.0 and `epochs: true` 1: a typo trained the wrong study.
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated(path, value))
    where = path + (".low" if isinstance(value, dict) else "")
    assert [e["loc"] for e in info.value.errors] == [where]


def test_an_integer_is_still_a_float() -> None:
    assert parse_spec(_mutated("training.lr", 1)).training.lr == 1.0
    assert parse_spec(_mutated("pruner.percentile", 10)).pruner.percentile == 10.0
    pau = {"clamp": 4, "init_interval": [-2, 2]}
    entry = parse_spec(_mutated("activations.pau", pau)).activations["pau"]
    assert (entry.clamp, entry.init_interval) == (4.0, (-2.0, 2.0))


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        ("n_trials", "20", "n_trials"),
        ("n_trials", 20.0, "n_trials"),
        ("seeds", True, "seeds"),
        ("seed", "1", "seed"),
        ("priority", 1.0, "priority"),
        ("version", True, "version"),
        ("name", 7, "name"),
        ("baselines", [1], "baselines.0"),
        ("dataset.val_size", "5000", "dataset.val_size"),
        ("dataset.val_size", 5000.0, "dataset.val_size"),
        ("dataset.train_subset", 100.0, "dataset.train_subset"),
        ("dataset.split_seed", "0", "dataset.split_seed"),
        ("pruner.percentile", "25", "pruner.percentile"),
        ("pruner.percentile", True, "pruner.percentile"),
        ("pruner.n_warmup_steps", "1", "pruner.n_warmup_steps"),
        ("pruner.min_resource", "3", "pruner.min_resource"),
        ("pruner.max_resource", 9.0, "pruner.max_resource"),
        ("sampler.constant_liar", "yes", "sampler.constant_liar"),
        ("sampler.multivariate", 1, "sampler.multivariate"),
        ("sampler.seed", "3", "sampler.seed"),
        ("sampler.n_startup_trials", 5.0, "sampler.n_startup_trials"),
        ("timeouts.trial_s", "60", "timeouts.trial_s"),
        ("timeouts.trial_s", 60.5, "timeouts.trial_s"),
        ("activations.pau.trainable", {"numerator": 1}, "activations.pau.trainable.numerator"),
        ("activations.pau.clamp", "2", "activations.pau.clamp"),
        ("activations.pau.clamp", float("inf"), "activations.pau.clamp"),
        ("activations.pau.init_interval", ["-3", 3], "activations.pau.init_interval.0"),
        ("activations.pau.init_interval", [-3, float("nan")], "activations.pau.init_interval.1"),
    ],
)
def test_mistyped_fixed_values_are_refused_not_coerced(path: str, value: Any, loc: str) -> None:
    # The fixed fields used to be lax where the searchable ones were strict: `n_trials: "20"`,
    # `val_size: 5000.0` or `constant_liar: "yes"` were silently converted.
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated(path, value))
    assert [e["loc"] for e in info.value.errors] == [loc]


def test_the_stored_form_parses_back_to_the_same_spec_and_types() -> None:
    # Workers re-parse the stored JSON: tuples come back as lists there and must be taken.
    data = _mutated("activations.pau", {"clamp": 4, "init_interval": [-2, 2.5]})
    data["training"]["betas"] = [0.8, 0.99]
    data["dataset"] = {"name": "folder", "path": "/data/imgs", "val_size": 60_000}
    data["pruner"] = {"name": "hyperband", "min_resource": 2, "max_resource": 9}
    data["sampler"] = {"name": "qmc", "qmc_type": "halton", "seed": 3}
    data["timeouts"] = {"trial_s": None, "study_s": 7200}
    spec = parse_spec(data)
    stored = json.loads(json.dumps(spec.model_dump(mode="json")))
    assert stored["activations"]["pau"]["init_interval"] == [-2.0, 2.5]
    again = parse_spec(stored)
    assert again == spec and again.model_dump(mode="json") == stored
    assert again.activations["pau"].init_interval == (-2.0, 2.5)
    assert again.training.betas == (0.8, 0.99)
    assert (again.pruner.min_resource, again.pruner.max_resource) == (2, 9)


def test_cifar_splits_must_fit_its_50000_training_images() -> None:
    assert parse_spec(_mutated("dataset.val_size", 49_999)).dataset.val_size == 49_999
    subset = parse_spec(_mutated("dataset.train_subset", 45_000)).dataset
    assert (subset.val_size, subset.train_subset) == (5000, 45_000)
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated("dataset.val_size", 50_000))
    assert info.value.errors == [
        {
            "loc": "dataset.val_size",
            "msg": "cifar10's training set has 50000 images: val_size must be below that, "
            "not 50000",
        }
    ]
    with pytest.raises(SpecError, match=r"dataset\.train_subset: cifar10 has 45000 training"):
        parse_spec(_mutated("dataset.train_subset", 45_001))
    # A folder's size is the worker's to check.
    folder = {"name": "folder", "path": "/data/imgs", "val_size": 80_000, "train_subset": 10**6}
    assert parse_spec(_mutated("dataset", folder)).dataset.val_size == 80_000


# -- fields a sampler or pruner does not use -------------------------------------------------
# What each sampler and pruner reads besides `name` (and the sampler's `seed`): written out here
# independently of the spec's tables, and checked against the Optuna objects make_sampler and
# make_pruner build.
SAMPLER_USES = {
    "tpe": {"constant_liar", "multivariate", "group", "n_startup_trials"},
    "random": set(),
    "cmaes": {"n_startup_trials"},
    "qmc": {"qmc_type"},
    "grid": set(),
    "nsga2": set(),
}
PRUNER_USES = {
    "median": {"n_startup_trials", "n_warmup_steps", "interval_steps"},
    "percentile": {"percentile", "n_startup_trials", "n_warmup_steps", "interval_steps"},
    "hyperband": {"min_resource", "max_resource", "reduction_factor"},
    "successive_halving": {"min_resource", "reduction_factor", "min_early_stopping_rate"},
    "none": set(),
}
# A value other than each field's default (and valid with any sampler or pruner).
NOT_DEFAULT: dict[str, dict[str, Any]] = {
    "sampler": {
        "constant_liar": False,
        "multivariate": False,
        "group": False,
        "n_startup_trials": 3,
        "qmc_type": "halton",
    },
    "pruner": {
        "n_startup_trials": 2,
        "n_warmup_steps": 2,
        "interval_steps": 2,
        "percentile": 10.0,
        "min_resource": 2,
        "max_resource": 9,
        "reduction_factor": 4,
        "min_early_stopping_rate": 1,
    },
}
USES = {"sampler": SAMPLER_USES, "pruner": PRUNER_USES}
FIELD_CASES = [
    (section, name, field)
    for section, uses in USES.items()
    for name in uses
    for field in NOT_DEFAULT[section]
]


def _with(section: str, name: str, **fields: Any) -> dict[str, Any]:
    """A spec any sampler takes (a grid too), with this sampler (seed 3) or pruner and fields."""
    given = {"name": name, **({"seed": 3} if section == "sampler" else {}), **fields}
    if section == "sampler" and name == "tpe" and fields.get("multivariate") is False:
        given["group"] = False  # TPE's group needs multivariate
    activations = {"relu": {}, "smu": {"alpha": {"choices": [0.1, 0.2]}}}
    return {"name": "fields", "activations": activations, section: given}


def _settings(built: Any) -> dict[str, Any]:
    """An Optuna sampler's or pruner's settings: its plain attributes, nested ones' too."""
    out: dict[str, Any] = {}
    for key, value in vars(built).items():
        if isinstance(value, (bool, int, float, str, type(None))):
            out[key] = value
        elif isinstance(value, (optuna.samplers.BaseSampler, optuna.pruners.BasePruner)):
            out[key] = _settings(value)
        elif hasattr(value, "_asdict"):  # TPE's parzen estimator parameters
            out[key] = {k: v for k, v in value._asdict().items() if not callable(v)}
    return out


def test_the_spec_knows_which_fields_each_sampler_and_pruner_uses() -> None:
    assert {k: set(v) for k, v in SAMPLER_FIELDS.items()} == SAMPLER_USES
    assert {k: set(v) for k, v in PRUNER_FIELDS.items()} == PRUNER_USES
    # Every field but name (and the sampler's seed) is some sampler's or pruner's.
    assert set(SamplerSpec.model_fields) - {"name", "seed"} == set(NOT_DEFAULT["sampler"])
    assert set(PrunerSpec.model_fields) - {"name"} == set(NOT_DEFAULT["pruner"])
    for section, model in (("sampler", SamplerSpec), ("pruner", PrunerSpec)):
        for field, value in NOT_DEFAULT[section].items():
            assert value != model.model_fields[field].default
            # Its description (docs/spec.md) names the samplers or pruners that use it.
            description = model.model_fields[field].description or ""
            for name, uses in USES[section].items():
                if field in uses:
                    assert re.search(rf"\b{name}\b", description), (field, name, description)


@pytest.mark.parametrize(("section", "name", "field"), FIELD_CASES)
def test_a_field_reaches_optuna_exactly_when_its_sampler_or_pruner_uses_it(
    section: str, name: str, field: str
) -> None:
    build = make_sampler if section == "sampler" else make_pruner
    changed = _with(section, name, **{field: NOT_DEFAULT[section][field]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental and seeding warnings
        default = _settings(build(parse_spec(_with(section, name))))
        given = _settings(build(parse_spec(changed)))  # a stored spec: parses however it is set
    if field in USES[section][name]:
        assert given != default
    else:
        assert given == default


@pytest.mark.parametrize(("section", "name", "field"), FIELD_CASES)
def test_a_new_spec_may_set_a_field_its_sampler_or_pruner_ignores_only_to_its_default(
    section: str, name: str, field: str
) -> None:
    data = _with(section, name, **{field: NOT_DEFAULT[section][field]})
    if field in USES[section][name]:
        spec = parse_spec(data, submission=True)
        assert getattr(getattr(spec, section), field) == NOT_DEFAULT[section][field]
        return
    with pytest.raises(SpecError) as info:
        parse_spec(data, submission=True)
    (error,) = info.value.errors
    users = [n for n, uses in USES[section].items() if field in uses]
    assert error["loc"] == f"{section}.{field}"
    assert error["msg"].startswith(f"the {name} {section} does not use {field} (only the ")
    assert f"leave {field} out" in error["msg"]
    assert f"set {section}.name: " + " or ".join(users) in error["msg"]
    # Its default is accepted (every stored spec states it), and so is the value in a spec
    # parsed as stored: one submitted before this check must still run in the workers.
    default = (SamplerSpec if section == "sampler" else PrunerSpec).model_fields[field].default
    assert parse_spec(_with(section, name, **{field: default}), submission=True)
    stored = parse_spec(data)
    assert parse_spec(stored.model_dump(mode="json")) == stored


@pytest.mark.parametrize("section", ["sampler", "pruner"])
def test_every_field_each_sampler_or_pruner_uses_is_accepted_together(section: str) -> None:
    for name, uses in USES[section].items():
        fields = {f: NOT_DEFAULT[section][f] for f in uses}
        if section == "pruner" and name == "hyperband":
            fields["max_resource"] = 27  # at least min_resource
        spec = parse_spec(_with(section, name, **fields), submission=True)
        assert {f: getattr(getattr(spec, section), f) for f in fields} == fields


def test_full_stored_dumps_of_every_sampler_and_pruner_pass_submission() -> None:
    # A stored spec states every field at its default: cloning it is a new submission.
    for sampler, pruner in itertools.product(SAMPLER_USES, PRUNER_USES):
        data = _with("sampler", sampler)
        data["pruner"] = {"name": pruner}
        stored = parse_spec(data).model_dump(mode="json")
        assert set(stored["sampler"]) == set(SamplerSpec.model_fields)
        assert parse_spec(stored, submission=True).model_dump(mode="json") == stored


@pytest.mark.parametrize(
    "pruner",
    [
        {"name": "successive_halving", "min_resource": 1},
        {"name": "successive_halving", "min_resource": 10_000, "min_early_stopping_rate": 3},
        {"name": "hyperband", "min_resource": 1, "max_resource": 1},
        {"name": "hyperband", "min_resource": 3, "max_resource": 27, "reduction_factor": 3},
        {"name": "hyperband", "max_resource": 1},
        {"name": "percentile", "percentile": 1e-3, "n_warmup_steps": 10_000},
    ],
)
def test_every_pruner_the_spec_accepts_is_one_optuna_builds(pruner: dict[str, Any]) -> None:
    # successive_halving with min_resource 0 used to pass the spec and fail in every worker.
    built = make_pruner(parse_spec(_mutated("pruner", pruner)))
    assert isinstance(built, optuna.pruners.BasePruner)


def test_hyperband_max_resource_below_min_resource_is_refused_when_new() -> None:
    # Optuna takes it, builds no bracket and never prunes (a stored spec may: SUBMISSION_ONLY).
    pruner = {"name": "hyperband", "min_resource": 5, "max_resource": 3}
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated("pruner", pruner), submission=True)
    assert [e["loc"] for e in info.value.errors] == ["pruner.max_resource"]
    assert "at least its min_resource (5)" in info.value.errors[0]["msg"]
    # auto is 1 for hyperband (make_pruner), so any max_resource >= 1 goes with it.
    assert parse_spec(_mutated("pruner", {"name": "hyperband", "max_resource": 1}))


# -- did you mean: a misspelt name or field is answered with the valid one ---------------------
TYPOS = [
    ("activations.smuu", {}, "activations.smuu", "did you mean 'smu'?"),
    ("activations.SMUU", {}, "activations.smuu", "did you mean 'smu'?"),
    ("training.batchsize", 64, "training.batchsize", "unknown field; did you mean 'batch_size'?"),
    ("trainng", {}, "trainng", "unknown field; did you mean 'training'?"),
    ("training.ema", {"strt_epoch": 1}, "training.ema.strt_epoch", "did you mean 'start_epoch'?"),
    ("training.lr", {"low": 0.1, "hihg": 1}, "training.lr.hihg", "did you mean 'high'?"),
    ("training.augment.flp", True, "training.augment.flp", "did you mean 'flip'?"),
    ("timeouts.trial", 60, "timeouts.trial", "did you mean 'trial_s'?"),
    ("model", "resnet19", "model.name", "did you mean 'resnet18'?"),
    ("training.optimizer", "adamm", "training.optimizer", "did you mean 'adamw'?"),
    ("sampler.name", "tpee", "sampler.name", "did you mean 'tpe'?"),
    ("activations.smu", {"alph": 0.1}, "activations.smu.alph", "did you mean 'alpha'?"),
    ("activations.smu", {"trainabel": {"mu": True}}, "activations.smu.trainabel", "'trainable'"),
    ("activations.smu", {"trainable": {"muu": True}}, "activations.smu.trainable.muu", "'mu'?"),
    ("baselines", ["rleu"], "baselines.0", "did you mean 'relu'?"),
]


@pytest.mark.parametrize(("path", "value", "loc", "hint"), TYPOS, ids=[t[0] for t in TYPOS])
def test_misspelt_names_get_a_suggestion(path: str, value: Any, loc: str, hint: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated(path, value), submission=True)
    messages = {e["loc"]: e["msg"] for e in info.value.errors}
    assert loc in messages, info.value.errors
    assert hint in messages[loc]


def test_a_field_nothing_resembles_lists_the_fields_taken_there() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_mutated("sampler.zzz", 1))
    [error] = info.value.errors
    assert error["loc"] == "sampler.zzz"
    assert error["msg"].startswith("unknown field; fields here: ")
    assert "n_startup_trials" in error["msg"] and "did you mean" not in error["msg"]


def test_an_enqueued_misspelt_parameter_gets_a_suggestion() -> None:
    data = _mutated("enqueue", [{"activation": "smu", "smu.alph": 0.2}])
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert "did you mean 'smu.alpha'?" in info.value.errors[0]["msg"]


def test_get_family_suggests_the_closest_name() -> None:
    from search_space.registry import get_family

    with pytest.raises(ValueError, match=r"'smuu'; did you mean 'smu'\? valid names: relu"):
        get_family("smuu")
    with pytest.raises(ValueError, match=r"'zzz'; valid names: relu"):  # nothing close
        get_family("zzz")


# -- warnings: valid specs whose training contradicts their budget ------------------------------
def _warnings_of(data: dict[str, Any]) -> dict[str, str]:
    from search_space.spec import spec_warnings

    found = spec_warnings(parse_spec(data, submission=True))
    assert spec_warnings(data) == found  # a mapping is parsed first
    return {w["loc"]: w["msg"] for w in found}


def test_proxy_with_one_epoch_warns_of_its_recipe_warmup_and_lookahead() -> None:
    # The case: the recipe's warm-up (2.3) and lookahead (epoch 3) outlast 1 epoch.
    data = _mutated("model", "proxy")
    data["training"] = {"epochs": 1}
    data["pruner"] = {"name": "median"}  # no pruner warm-up to warn of as well
    found = _warnings_of(data)
    assert set(found) == {"training.warmup_epochs", "training.lookahead.start_epoch"}
    assert found["training.warmup_epochs"].startswith(
        "warmup_epochs (2.3, the proxy recipe's value) is not below epochs (1): the learning "
        "rate never reaches its peak"
    )
    assert "lookahead never runs" in found["training.lookahead.start_epoch"]
    assert "set lookahead: null" in found["training.lookahead.start_epoch"]


def test_the_recipe_at_its_own_epochs_and_the_quickstart_warn_of_nothing() -> None:
    assert _warnings_of(_mutated("model", "proxy")) == {}
    assert _warnings_of(yaml.safe_load(QUICKSTART)) == {}


@pytest.mark.parametrize(
    ("training", "loc", "text"),
    [
        ({"epochs": 2, "warmup_epochs": 2.0}, "training.warmup_epochs", "(2) is not below"),
        (
            {"epochs": {"choices": [1, 8]}, "warmup_epochs": 1.5},
            "training.warmup_epochs",
            "epochs (1, the fewest a trial can get)",
        ),
        (
            {"epochs": 4, "warmup_epochs": {"low": 0.0, "high": 5.0}},
            "training.warmup_epochs",
            "warmup_epochs (up to 5)",
        ),
        (
            {"epochs": 3, "lookahead": {"start_epoch": 3}},
            "training.lookahead.start_epoch",
            "lookahead.start_epoch (3) is not below epochs (3)",
        ),
    ],
)
def test_warmup_or_lookahead_at_or_past_the_epochs_warns(
    training: dict[str, Any], loc: str, text: str
) -> None:
    data = _mutated("training", training)
    assert text in _warnings_of(data)[loc]
    shorter = {**training, "warmup_epochs": 0.5}
    if "lookahead" in training:
        shorter["lookahead"] = {"start_epoch": 0}
    assert _warnings_of(_mutated("training", shorter)) == {}


def test_a_pruner_warmup_outlasting_every_trial_warns() -> None:
    data = _mutated("training", {"epochs": {"low": 2, "high": 4}})
    data["pruner"] = {"name": "median", "n_warmup_steps": 4}
    assert "median pruner never prunes" in _warnings_of(data)["pruner.n_warmup_steps"]
    data["pruner"]["n_warmup_steps"] = 3  # the 4-epoch trials can be pruned at their last epoch
    assert _warnings_of(data) == {}


def test_ema_starting_past_the_fewest_searched_epochs_stays_an_error() -> None:
    data = _mutated("training", {"epochs": {"low": 2, "high": 5}, "ema": {"start_epoch": 3}})
    with pytest.raises(SpecError, match=r"below epochs \(2, the fewest a trial can get\)"):
        parse_spec(data)
