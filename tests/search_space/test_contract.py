"""The trial contract: each option declared once reaches the spec, the suggestion and the trainer."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from search_space.contract import (
    ConfigError,
    TrainingConfig,
    TrialConfig,
    knob_of,
    parse_trial_config,
)
from search_space.contract.fields import ConfigModel
from search_space.spec import AugmentSpec, DatasetSpec, ModelSpec, TrainingSpec, parse_spec
from search_space.spec.sections import is_section_type
from search_space.suggest import suggest_config, suggest_trial


def _spec_fields(config: type[ConfigModel]) -> list[str]:
    return [name for name, info in config.model_fields.items() if knob_of(info).spec]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("config", "spec"),
    [
        (TrainingConfig, TrainingSpec),
        (TrainingConfig.model_fields["augment"].annotation, AugmentSpec),
        (TrialConfig.model_fields["model"].annotation, ModelSpec),
        (TrialConfig.model_fields["dataset"].annotation, DatasetSpec),
    ],
    ids=["training", "augment", "model", "dataset"],
)
def test_every_contract_option_is_a_spec_field_with_its_default(config: Any, spec: Any) -> None:
    assert list(spec.model_fields) == _spec_fields(config)
    for name in spec.model_fields:
        info = config.model_fields[name]
        if not is_section_type(info.annotation):
            assert spec.model_fields[name].default == info.default, name
            assert spec.model_fields[name].description == info.description, name


def _searchable_training() -> list[str]:
    return [
        name
        for name, info in TrainingConfig.model_fields.items()
        if (knob := knob_of(info)) and knob.spec and knob.search and knob.domain is not None
    ]


@pytest.mark.parametrize("name", _searchable_training())
def test_every_searchable_training_option_is_searched_suggested_and_trained(name: str) -> None:
    domain = knob_of(TrainingConfig.model_fields[name]).domain  # type: ignore[union-attr]
    assert domain is not None
    value: Any = {
        "int": {"choices": [1, 2]},
        "float": {"choices": [0.25, 0.5]},
        "bool": {"choices": [False, True]},
        "str": {"choices": list(domain.choices or ())[:2]},
    }[domain.kind]
    spec = parse_spec({"name": "s", "activations": {"relu": {}}, "training": {name: value}})
    assert [d.name for d in spec.search_space()] == [f"training.{name}"]
    chosen = value["choices"][1]
    trial = optuna.trial.FixedTrial({f"training.{name}": chosen})
    assert suggest_config(trial, spec)["training"][name] == chosen
    assert getattr(suggest_trial(trial, spec).training, name) == chosen


def test_a_new_option_reaches_the_trainer_from_one_declaration() -> None:
    spec = parse_spec(
        {"name": "s", "activations": {"pau": {}}, "training": {"activation_lr_scale": 0.1}}
    )
    config = suggest_trial(optuna.trial.FixedTrial({}), spec)
    assert config.training.activation_lr_scale == 0.1
    assert "activation_lr_scale" in config.canonical()["training"]


def test_the_canonical_form_states_every_default() -> None:
    sparse = parse_trial_config({"activation": {"family": "relu"}})
    full = parse_trial_config(sparse.canonical())
    assert full == sparse and full.canonical_json() == sparse.canonical_json()
    assert set(sparse.canonical()["training"]) == set(TrainingConfig.model_fields)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"training": {"lr": True}}, "training.lr: expected a number, got True"),
        ({"training": {"epochs": "3"}}, "training.epochs: expected a number"),
        ({"training": {"augment": {"flip": 1}}}, "training.augment.flip: expected true or false"),
        ({"training": {"warmup": 1}}, "training: unknown keys warmup; valid: epochs"),
        ({"model": {"name": "resnet9"}}, "model.name: 'resnet9' is not one of"),
        ({"dataset": {"name": "folder"}}, "dataset 'folder' needs a path"),
        ({"seeds": 0}, "seeds: 0 is outside the domain"),
        ({"activation": {"family": "smuu"}}, "unknown activation family 'smuu'"),
    ],
)
def test_a_bad_config_names_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_trial_config(config)
    assert message in str(info.value)


def test_a_family_is_resolved_once_from_config_to_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    import search_space.contract.trial as trial_module
    import search_space.modules.base as base_module
    from search_space.build import ActivationFactory
    from search_space.registry import resolve_settings

    calls: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        return resolve_settings(*args, **kwargs)

    monkeypatch.setattr(trial_module, "resolve_settings", counting)
    monkeypatch.setattr(base_module, "resolve_settings", counting)
    config = parse_trial_config({"activation": {"family": "smu", "params": {"alpha": 0.1}}})
    factory = ActivationFactory(config.activation)
    modules = [factory(channels) for channels in (8, 16, 32)]
    assert calls == ["smu"]  # validating the config; the factory and its modules reuse it
    assert all(float(m.value("alpha")) == pytest.approx(0.1) for m in modules)
