"""ActivationFactory scopes, learned-parameter records, curves and the pre-screen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from activation_reference import REFERENCES
from torch import nn

from search_space.build import (
    ActivationConfig,
    ActivationFactory,
    activation_parameters,
    activation_sites,
    build_activation,
    no_weight_decay_parameters,
)
from search_space.curves import activation_curves, prescreen, sample_curve
from search_space.registry import FAMILIES

SITE_CHANNELS = (4, 8, 16)


class TinyNet(nn.Module):
    """Three conv sites and one MLP-head site, built the way model builders do."""

    def __init__(self, factory: ActivationFactory) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(3 if i == 0 else SITE_CHANNELS[i - 1], c, 3, padding=1)
            for i, c in enumerate(SITE_CHANNELS)
        )
        self.acts = nn.ModuleList(factory(c) for c in SITE_CHANNELS)
        self.fc = nn.Linear(SITE_CHANNELS[-1], 5)
        self.head_act = factory(5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, act in zip(self.convs, self.acts, strict=True):
            x = act(conv(x))
        return self.out(self.head_act(self.fc(x.mean(dim=(2, 3)))))


def _sgd_step(model: nn.Module, lr: float = 0.5) -> None:
    """One plain SGD step over model.parameters() (each shared Parameter appears once)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def _activation_numel(model: nn.Module) -> int:
    return sum(p.numel() for p in no_weight_decay_parameters(model))


@pytest.mark.parametrize(
    ("config", "shared", "per_layer", "per_channel"),
    [
        ({"family": "smu"}, 1, 4, 4 + 8 + 16 + 5),  # μ trainable, α fixed
        ({"family": "smu", "trainable": {"alpha": True}}, 2, 8, 2 * 33),
        ({"family": "prelu"}, 1, 4, 33),
        ({"family": "pau"}, 10, 40, 10 * 33),
        ({"family": "opau", "options": {"k": 3, "l": 2}}, 6, 24, 6 * 33),
        ({"family": "acon_c"}, 3, 12, 3 * 33),
    ],
)
def test_scopes_give_the_expected_parameter_counts(
    config: dict[str, object], shared: int, per_layer: int, per_channel: int
) -> None:
    for scope, expected in (
        ("shared", shared),
        ("per_layer", per_layer),
        ("per_channel", per_channel),
    ):
        model = TinyNet(ActivationFactory({**config, "scope": scope}))
        assert _activation_numel(model) == expected, scope
        # model.parameters() deduplicates the shared set: the optimizer sees each once.
        conv_and_fc = sum(p.numel() for n, p in model.named_parameters() if "act" not in n)
        assert sum(p.numel() for p in model.parameters()) == conv_and_fc + expected
        model(torch.randn(2, 3, 6, 6)).sum().backward()


def test_shared_scope_shares_parameter_objects_and_trains_them_together() -> None:
    model = TinyNet(ActivationFactory({"family": "smu", "scope": "shared"}))
    sites = list(activation_sites(model).values())
    assert len({id(site.log_mu) for site in sites}) == 1
    model(torch.randn(2, 3, 6, 6)).pow(2).sum().backward()
    _sgd_step(model)
    values = {tuple(v["mu"]) for v in activation_parameters(model).values()}
    assert len(values) == 1 and values != {(1.0,)}


def test_per_layer_scope_trains_each_site_separately() -> None:
    model = TinyNet(ActivationFactory({"family": "smu", "scope": "per_layer"}))
    model(torch.randn(2, 3, 6, 6)).pow(2).sum().backward()
    _sgd_step(model)
    assert len({tuple(v["mu"]) for v in activation_parameters(model).values()}) == 4


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 5, 5), (3, 4, 7)])
def test_per_channel_parameters_broadcast_over_dim_1(shape: tuple[int, ...]) -> None:
    module = build_activation({"family": "smu", "scope": "per_channel"}, 4)
    mus = torch.tensor([0.5, 1.0, 2.0, 4.0])
    with torch.no_grad():
        module.log_mu.copy_(mus.log())
    x = torch.randn(shape)
    y = module(x)
    for c in range(4):
        single = build_activation({"family": "smu", "params": {"mu": float(mus[c])}})
        assert torch.allclose(y[:, c], single(x[:, c]), atol=1e-6)


def test_families_without_parameters_ignore_scope() -> None:
    model = TinyNet(ActivationFactory({"family": "gelu", "scope": "per_channel"}))
    assert _activation_numel(model) == 0


def test_invalid_scope_and_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="per_channel"):
        ActivationConfig(family="frelu", scope="shared")
    with pytest.raises(ValueError, match="valid names"):
        ActivationConfig(family="nope")
    with pytest.raises(ValueError, match="no parameter"):
        ActivationConfig(family="smu", params={"beta": 1.0})
    with pytest.raises(ValueError, match="init_target"):
        ActivationConfig(family="smu", init_target="gelu")
    with pytest.raises(ValueError, match="clamp"):
        ActivationConfig(family="smu", clamp=3.0)


def test_activation_parameters_are_constrained_values() -> None:
    model = TinyNet(ActivationFactory({"family": "smu", "scope": "per_channel"}))
    record = activation_parameters(model)
    assert list(record) == ["acts.0", "acts.1", "acts.2", "head_act"]
    assert record["acts.1"]["mu"] == [1.0] * 8  # μ itself, not log μ = 0
    assert record["acts.1"]["alpha"] == [0.25]
    pau = activation_parameters(build_activation({"family": "pau"}))["root"]
    assert list(pau) == ["a0", "a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3", "b4"]
    assert all(v > 0 for k, (v,) in pau.items() if k.startswith("b"))  # |b| floor, no zeros
    frelu = activation_parameters(build_activation({"family": "frelu"}, 3))["root"]
    assert set(frelu) == {"scale", "shift"} and len(frelu["scale"]) == 3


def test_config_is_frozen_and_json_ready() -> None:
    config = ActivationConfig(family="smu", params={"mu": 2.0}, scope="per_layer")
    assert ActivationConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValueError):
        config.family = "relu"  # type: ignore[misc]


def test_maxout_reports_its_width_factor() -> None:
    factory = ActivationFactory({"family": "maxout", "options": {"k": 3}})
    assert factory.head_only and factory.width_factor == 3
    head = nn.Sequential(nn.Linear(10, 4 * factory.width_factor), factory(4), nn.Linear(4, 2))
    assert head(torch.randn(5, 10)).shape == (5, 2)
    with pytest.raises(ValueError, match="width_factor"):
        factory(4)(torch.randn(5, 4))


def test_init_target_and_interval_reach_the_coefficients() -> None:
    gelu_fit = build_activation({"family": "pau", "init_target": "gelu"}).double()
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert (gelu_fit(x) - torch.nn.functional.gelu(x)).abs().max() < 5e-3
    wide = build_activation(
        {
            "family": "opau",
            "options": {"k": 4, "l": 2},
            "init_target": "tanh",
            "init_interval": (-2, 2),
        }
    ).double()
    xs = torch.linspace(-2, 2, 41, dtype=torch.float64)
    assert (wide(xs) - torch.tanh(xs)).abs().max() < 0.05


# -- curves ---------------------------------------------------------------------------------
def test_sample_curve_of_a_config_matches_the_reference() -> None:
    x = np.linspace(-4, 4, 81)
    f, df = sample_curve({"family": "smu1", "params": {"mu": 0.5}}, x)
    ref_f, ref_df, _ = REFERENCES["smu1"](x, {"alpha": 0.25, "mu": 0.5}, {})
    assert f.dtype == np.float64 and f.shape == x.shape
    np.testing.assert_allclose(f, ref_f, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(df, ref_df, rtol=1e-6, atol=1e-8)


def test_activation_curves_per_site_with_channel_envelope() -> None:
    model = TinyNet(ActivationFactory({"family": "smu", "scope": "per_channel"}))
    with torch.no_grad():
        model.acts[1].log_mu.copy_(torch.linspace(-1, 1, 8))
    grid = np.linspace(-3, 3, 13)
    curves = activation_curves(model, grid)
    assert set(curves) == {"acts.0", "acts.1", "acts.2", "head_act"}
    site = curves["acts.1"]
    assert set(site) == {"x", "f", "df", "f_min", "f_max", "df_min", "df_max"}
    assert site["x"] == grid.tolist()
    assert all(lo <= hi for lo, hi in zip(site["f_min"], site["f_max"], strict=True))
    same = curves["acts.0"]  # all channels at μ = 1: the envelope collapses onto f
    np.testing.assert_allclose(same["f_min"], same["f"], atol=1e-12)
    mean_mu = float(np.exp(np.linspace(-1, 1, 8)).mean())
    ref_f, _, _ = REFERENCES["smu"](grid, {"alpha": 0.25, "mu": mean_mu}, {})
    np.testing.assert_allclose(site["f"], ref_f, rtol=1e-5)


@pytest.mark.parametrize("family", ["frelu", "meta_acon", "maxout"])
def test_curves_of_non_pointwise_families(family: str) -> None:
    module = build_activation({"family": family}, 4)
    x = np.linspace(-2, 2, 401)
    f, df = sample_curve(module, x)
    assert np.isfinite(f).all() and np.isfinite(df).all()
    # df is the derivative of f (the response to a constant input), away from kinks.
    numeric = np.gradient(f, x)
    steps = np.abs(np.diff(df)) < 1e-2
    smooth = np.concatenate([[False], steps[:-1] & steps[1:], [False]])
    assert smooth.mean() > 0.9
    np.testing.assert_allclose(df[smooth], numeric[smooth], atol=2e-3)
    if family == "maxout":
        np.testing.assert_allclose(f, x)


def test_curves_leave_the_live_module_untouched() -> None:
    module = build_activation({"family": "frelu"}, 3).train()
    before = module.bn.running_mean.clone()
    sample_curve(module, np.linspace(-5, 5, 11))
    assert module.training and torch.equal(module.bn.running_mean, before)


# -- prescreen ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_prescreen_accepts_every_default(family: str) -> None:
    result = prescreen({"family": family})
    assert result.ok, result.reason


class _LogActivation(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


def test_prescreen_rejects_nan() -> None:
    result = prescreen(_LogActivation())
    assert not result.ok and result.reason is not None and "not finite" in result.reason


def test_prescreen_rejects_exploding() -> None:
    result = prescreen({"family": "pau", "options": {"m": 8, "n": 1}})
    assert not result.ok and result.reason is not None and result.reason.startswith("exploding")


def test_prescreen_rejects_constant() -> None:
    result = prescreen({"family": "acon_c", "params": {"p1": 0.0, "p2": 0.0}})
    assert not result.ok and result.reason is not None and result.reason.startswith("constant")


def test_prescreen_rejects_what_cannot_be_built() -> None:
    result = prescreen({"family": "pau", "options": {"m": 12}})
    assert not result.ok and result.reason is not None and result.reason.startswith("cannot build")
