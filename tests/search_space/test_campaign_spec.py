"""The campaign spec: examples valid, stored documents stable, stages built as studies."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_space.spec import SpecError, is_campaign, parse_campaign, parse_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "examples" / "campaign.yaml", ROOT / "examples" / "campaign-cpu.yaml"]

BASE = {
    "name": "c",
    "model": "lenet",
    "training": {"epochs": 2, "lr": {"low": 0.01, "high": 0.1, "log": True}},
    "activations": {"relu": {}, "smu": {"alpha": {"low": 0.0, "high": 0.5}}},
    "baselines": ["ReLU"],
}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_are_valid_campaigns_with_a_transfer_stage(path: Path) -> None:
    campaign = parse_campaign(path.read_text(encoding="utf-8"), submission=True)
    assert campaign.stage_count == 3 and campaign.baselines == ["relu"]
    assert len(campaign.models(2)) > 1  # the transfer stage
    assert campaign.stages[2].seeds == 3 and campaign.stages[2].promote is None
    # The stored document parses back to the same campaign.
    assert parse_campaign(campaign.document()).document() == campaign.document()


def test_a_document_with_stages_is_a_campaign() -> None:
    assert is_campaign({**BASE, "stages": []}) and not is_campaign(BASE)
    assert not is_campaign("stages: []")


def test_a_later_stage_runs_exactly_its_promoted_configurations() -> None:
    stages = [
        {"model": "proxy", "n_trials": 30, "promote": {"top": 2}},
        {"model": ["resnet18", "mobilenet_v2"], "training": {"lr": 0.05}, "seeds": 3},
    ]
    campaign = parse_campaign({**BASE, "stages": stages}, submission=True)
    first = parse_spec(campaign.study_spec(0, "proxy"))
    assert first.n_trials == 30 and first.model.name == "proxy"
    assert first.training.lr.low == 0.01  # type: ignore[union-attr]  # the base's search
    assert first.training.batch_size == 1024  # the proxy's recipe fills what nobody gave
    promoted = [
        {"activation": "smu", "smu.alpha": 0.2, "training.lr": 0.03},
        {"activation": "smu", "smu.alpha": 0.2, "training.lr": 0.07},
    ]
    carried = campaign.carry(1, promoted)
    assert carried == [{"activation": "smu", "smu.alpha": 0.2}]  # lr is the stage's now
    later = parse_spec(campaign.study_spec(1, "mobilenet_v2", enqueue=carried, seed=9))
    assert later.enqueue == carried and later.n_trials == 2  # the baseline and smu
    assert (later.seed, later.seeds, later.sampler.name, later.pruner.name) == (
        9,
        3,
        "random",
        "none",
    )
    assert later.training.lr == 0.05 and later.training.epochs == 2
    assert later.name == "c · stage 2 · mobilenet_v2"


def test_errors_are_located_where_the_document_wrote_them() -> None:
    stages = [
        {"training": {"epochs": 0}, "promote": {"top": 1}},
        {"model": ["resnet18", "nope"]},
    ]
    with pytest.raises(SpecError) as caught:
        parse_campaign({**BASE, "stages": stages}, submission=True)
    locs = {error["loc"] for error in caught.value.errors}
    assert locs == {"stages.0.training.epochs", "stages.1.model.1.name"}


def test_an_error_of_the_base_is_said_once() -> None:
    base = {**BASE, "activations": {"smu": {"alpha": {"low": 0.5, "high": 0.1}}}}
    stages = [{"promote": {"top": 1}}, {"model": "resnet18"}]
    with pytest.raises(SpecError) as caught:
        parse_campaign({**base, "stages": stages})
    assert [e["loc"] for e in caught.value.errors] == ["activations.smu.alpha"]
