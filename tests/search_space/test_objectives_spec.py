"""The spec's `objectives`: accuracy alone by default, or accuracy and one measured cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from search_space.samplers import make_pruner, make_sampler
from search_space.spec import SpecError, parse_campaign, parse_spec

REPO_ROOT = Path(__file__).resolve().parents[2]


def _spec(**fields: Any) -> dict[str, Any]:
    return {"name": "costs", "activations": {"relu": {}, "silu": {}}, **fields}


def _errors(spec: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec, submission=True)
    return {e["loc"]: e["msg"] for e in caught.value.errors}


def test_a_spec_without_objectives_optimises_accuracy_alone() -> None:
    spec = parse_spec(_spec(), submission=True)
    assert spec.objectives == ["accuracy"]
    assert spec.directions() == ["maximize"]
    assert spec.cost_objective is None
    assert spec.pruner.name == "median"  # today's default, untouched


@pytest.mark.parametrize("cost", ["step_time", "params"])
@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2", "qmc", "grid"])
def test_a_cost_objective_makes_a_two_direction_study(cost: str, sampler: str) -> None:
    spec = parse_spec(
        _spec(objectives=["accuracy", cost], sampler={"name": sampler}, pruner={"name": "none"}),
        submission=True,
    )
    assert spec.directions() == ["maximize", "minimize"]
    assert spec.cost_objective == cost
    study = optuna.create_study(
        directions=spec.directions(), sampler=make_sampler(spec), pruner=make_pruner(spec)
    )
    trial = study.ask()
    study.tell(trial, [0.5, 1.2])
    assert [t.values for t in study.best_trials] == [[0.5, 1.2]]


def test_a_stored_spec_keeps_its_objectives() -> None:
    spec = parse_spec(_spec(objectives=["accuracy", "params"], pruner={"name": "none"}))
    again = parse_spec(spec.model_dump(mode="json"))
    assert again.objectives == ["accuracy", "params"]


def test_cmaes_and_a_pruner_are_refused_with_a_cost() -> None:
    errors = _errors(_spec(objectives=["accuracy", "step_time"], sampler={"name": "cmaes"}))
    assert "optimises one objective only" in errors["sampler.name"]
    assert "nsga2" in errors["sampler.name"]
    assert "cannot prune" in errors["pruner.name"]
    assert "median" in errors["pruner.name"]


@pytest.mark.parametrize(
    ("objectives", "says"),
    [
        (["params"], "first objective must be accuracy"),
        (["accuracy", "params", "step_time"], "at most one cost"),
        (["accuracy", "accuracy"], "at most one cost"),
        (["accuracy", "latency"], "Input should be"),
    ],
)
def test_bad_objectives_name_the_field(objectives: list[str], says: str) -> None:
    errors = _errors(_spec(objectives=objectives, pruner={"name": "none"}))
    assert any(loc.startswith("objectives") and says in msg for loc, msg in errors.items())


def test_every_stage_of_a_campaign_with_a_cost_keeps_it() -> None:
    campaign = yaml.safe_load((REPO_ROOT / "examples" / "campaign-cpu.yaml").read_text())
    campaign.update(objectives=["accuracy", "params"], pruner={"name": "none"})
    parsed = parse_campaign(campaign)
    for index in range(len(parsed.stages)):
        for model in parsed.models(index):
            stage = parse_spec(parsed.study_spec(index, model), submission=True)
            assert stage.directions() == ["maximize", "minimize"]
            assert stage.cost_objective == "params" and stage.pruner.name == "none"
