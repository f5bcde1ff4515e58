"""Every family's values and gradients against independent float64 formulas; gradcheck; low
precision (bf16 autocast, fp16 inputs) including the traps of ACTIVATIONS.md; identities."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from activation_reference import REFERENCES, away_from_kinks
from scipy.special import expit

from search_space.build import ActivationConfig, build_activation
from search_space.modules.base import ActivationModule
from search_space.registry import (
    ALIASES,
    FAMILIES,
    OPAU_BASES,
    PAU_FORMS,
    PAU_REFERENCE_LEAKY_RELU,
    get_alias,
    get_family,
)

X_POINTS = np.array([-10.0, -3.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 3.0, 10.0])
GRADCHECK_POINTS = np.array([-2.7, -1.3, -0.45, 0.35, 1.15, 2.6])
SPATIAL = ("frelu", "meta_acon", "maxout")  # not pointwise: tested on their own below


def _case(family: str, label: str = "", **config: Any) -> Any:
    return pytest.param({"family": family, **config}, id=f"{family}-{label}" if label else family)


def _pointwise_cases() -> list[Any]:
    cases = [_case(name) for name in FAMILIES if name not in SPATIAL]
    cases += [_case(name) for name in ALIASES]
    for name, family in FAMILIES.items():
        cases += [_case(name, preset, preset=preset) for preset in family.presets]
    cases += [
        _case("leaky_relu", "slope", params={"negative_slope": 0.2}),
        _case("prelu", "a", params={"a": -0.3}),
        _case("rrelu", "lu", params={"lower": 0.05, "upper": 0.4}),
        _case("elu", "alpha", params={"alpha": 0.5}),
        _case("celu", "alpha", params={"alpha": 2.0}),
        _case("softplus", "beta", params={"beta": 2.5}),
        _case("gelu", "tanh", options={"approximate": "tanh"}),
        _case("swish", "beta", params={"beta": 0.6}),
        _case("acon_c", "p", params={"p1": 1.3, "p2": 0.2, "beta": 0.7}),
        _case("smu", "p", params={"alpha": 0.1, "mu": 2.5}, trainable={"alpha": True}),
        _case("smu1", "p", params={"alpha": 0.1, "mu": 0.4}, trainable={"alpha": True}),
        _case("pau", "B32", options={"form": "B", "m": 3, "n": 2}),
        _case("pau", "A88", options={"form": "A", "m": 8, "n": 8}, init_target="gelu"),
        _case("pau", "C23", options={"form": "C", "m": 2, "n": 3}, init_target="tanh"),
        _case("opau", "he88", options={"basis": "hermite_he", "k": 8, "l": 8}),
        _case("opau", "lag32", options={"basis": "laguerre", "k": 3, "l": 2}, init_target="silu"),
        _case("opau", "leg23", options={"basis": "legendre", "k": 2, "l": 3}),
    ]
    cases += [_case("pau", form, options={"form": form}) for form in PAU_FORMS]
    cases += [_case("opau", basis, options={"basis": basis}) for basis in OPAU_BASES]
    return cases


CASES = _pointwise_cases()


def _build(config: dict[str, Any], channels: int = 1) -> ActivationModule:
    module = build_activation(ActivationConfig.model_validate(config), channels)
    assert isinstance(module, ActivationModule)
    return module.double().eval()


def _reference_inputs(module: ActivationModule) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Family name, constrained parameter values and options as the reference takes them."""
    params: dict[str, Any] = dict(module.initial)  # fixed families use these floats directly
    if module.spec.learnable:
        for name in module.kernel_param_names():
            value = module.value(name).detach().cpu().numpy()
            vector = name in module.spec.coefficients  # else a scalar (one channel here)
            params[name] = value.reshape(-1).tolist() if vector else float(value.reshape(-1)[0])
    return module.spec.name, params, dict(module.options)


@pytest.mark.parametrize("config", CASES)
def test_values_and_gradients_match_float64_reference(config: dict[str, Any]) -> None:
    module = _build(config)
    family, params, options = _reference_inputs(module)
    ref_f, ref_dx, ref_dp = REFERENCES[family](X_POINTS, params, options)
    x = torch.tensor(X_POINTS, dtype=torch.float64, requires_grad=True)
    y = module(x[:, None])[:, 0]
    np.testing.assert_allclose(y.detach().numpy(), ref_f, rtol=1e-9, atol=1e-12)
    (dx,) = torch.autograd.grad(y.sum(), x)
    smooth = away_from_kinks(family, params, options, X_POINTS)
    np.testing.assert_allclose(dx.numpy()[smooth], ref_dx[smooth], rtol=1e-8, atol=1e-11)
    if not module.spec.learnable:
        return  # fixed hyperparameters only: no parameter gradients to check
    # Every parameter (trainable or not) through the reference function, per point.
    names = module.kernel_param_names()
    args = [a.detach().clone().requires_grad_(True) for a in module.kernel_args(x[:, None])]
    for i, _point in enumerate(X_POINTS):
        if not smooth[i] and family in ("pau", "opau"):
            continue  # |·| kinks: the coefficient gradients there are subgradients
        out = module.fn(x[i : i + 1, None].detach(), *args).sum()
        grads = torch.autograd.grad(out, args)
        for name, grad in zip(names, grads, strict=True):
            if name not in module.spec.coefficients:  # a scalar, () or (1,) per channel
                assert grad.sum().item() == pytest.approx(ref_dp[name][i], rel=1e-8, abs=1e-11), (
                    name
                )
                continue
            want = np.array([ref_dp[label][i] for label in _coefficient_labels(module, name)])
            np.testing.assert_allclose(grad.numpy(), want, rtol=1e-8, atol=1e-11, err_msg=name)


def _coefficient_labels(module: ActivationModule, name: str) -> list[str]:
    """The user-facing names of a coefficient vector's entries (a0.., b1.. or b0..)."""
    return [k for k in module.parameter_values() if k.startswith(name) and k[len(name) :].isdigit()]


@pytest.mark.parametrize("config", CASES)
def test_gradcheck_float64(config: dict[str, Any]) -> None:
    module = _build(config)
    family, params, options = _reference_inputs(module)
    points = GRADCHECK_POINTS[away_from_kinks(family, params, options, GRADCHECK_POINTS, 1e-3)]
    x = torch.tensor(points, dtype=torch.float64)[:, None].requires_grad_(True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    if module.spec.learnable:
        # |b| has a kink at b = 0: move near-zero coefficients (the 1e-7 floor) off it.
        args = [
            torch.where(a.abs() < 1e-3, torch.full_like(a, 0.05), a).detach().requires_grad_(True)
            if name in module.spec.coefficients
            else a.detach().clone().requires_grad_(True)
            for name, a in zip(module.kernel_param_names(), module.kernel_args(x), strict=True)
        ]
        assert torch.autograd.gradcheck(module.fn, (x, *args), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_positive_parameters_chain_through_log_space() -> None:
    module = _build({"family": "smu", "params": {"alpha": 0.2, "mu": 1.7}})
    x = torch.tensor(X_POINTS, dtype=torch.float64)[:, None]
    module(x).sum().backward()
    mu = module.value("mu").item()  # 1.7 after an fp32 round trip through log space
    assert mu == pytest.approx(1.7, rel=1e-6)
    alpha = module.value("alpha").item()
    _, _, ref = REFERENCES["smu"](X_POINTS, {"alpha": alpha, "mu": mu}, {})
    assert module.log_mu.grad is not None
    assert module.log_mu.grad.item() == pytest.approx(mu * ref["mu"].sum(), rel=1e-9)


def _spatial_module(family: str, channels: int = 3) -> ActivationModule:
    torch.manual_seed(0)
    options = {"k": 3} if family == "maxout" else ({"r": 2} if family == "meta_acon" else {})
    module = build_activation({"family": family, "options": options}, channels).double()
    for name, p in module.named_parameters():
        with torch.no_grad():
            p.copy_(torch.randn_like(p) * 0.7 + (1.0 if name.endswith("bn.weight") else 0.0))
    if family == "frelu":
        module.bn.running_mean.copy_(torch.randn(channels, dtype=torch.float64) * 0.3)
        module.bn.running_var.copy_(torch.rand(channels, dtype=torch.float64) + 0.5)
    return module.eval()


def _frelu_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    _n, _c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            conv += (
                p["conv.weight"][None, :, 0, dy, dx, None, None]
                * padded[:, :, dy : dy + h, dx : dx + w]
            )
    conv += p["conv.bias"][None, :, None, None]
    scale = p["bn.weight"] / np.sqrt(p["bn.running_var"] + 1e-5)
    funnel = (conv - p["bn.running_mean"][None, :, None, None]) * scale[None, :, None, None]
    return np.maximum(x, funnel + p["bn.bias"][None, :, None, None])


def _meta_acon_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    context = x.mean(axis=(2, 3))
    hidden = context @ p["fc1.weight"][:, :, 0, 0].T + p["fc1.bias"]
    beta = expit(hidden @ p["fc2.weight"][:, :, 0, 0].T + p["fc2.bias"])[:, :, None, None]
    d = (p["p1"] - p["p2"])[None, :, None, None]
    return d * x * expit(beta * d * x) + p["p2"][None, :, None, None] * x


def _maxout_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    n, kc = x.shape
    return x.reshape(n, kc // 3, 3).max(axis=2)


SPATIAL_REFERENCES = {
    "frelu": _frelu_reference,
    "meta_acon": _meta_acon_reference,
    "maxout": _maxout_reference,
}


def _numeric_gradient(
    fn: Any, inputs: dict[str, np.ndarray], name: str, weights: np.ndarray
) -> np.ndarray:
    """∂(Σ weights·fn)/∂inputs[name] by central differences of the NumPy reference."""
    base = inputs[name]
    grad = np.zeros_like(base)
    h = 1e-6
    for idx in np.ndindex(base.shape):
        for sign in (1, -1):
            shifted = dict(inputs)
            shifted[name] = base.copy()
            shifted[name][idx] += sign * h
            grad[idx] += sign * float((fn(shifted["x"], shifted) * weights).sum()) / (2 * h)
    return grad


@pytest.mark.parametrize("family", SPATIAL)
def test_non_pointwise_families_match_reference(family: str) -> None:
    module = _spatial_module(family)
    rng = np.random.default_rng(1)
    shape = (2, 9) if family == "maxout" else (2, 3, 3, 3)
    x_np = rng.normal(0, 1.5, shape)
    x = torch.tensor(x_np, requires_grad=True)
    y = module(x)
    inputs = {"x": x_np} | {
        name: t.detach().numpy().copy()
        for name, t in [*module.named_parameters(), *module.named_buffers()]
    }
    if family == "meta_acon":
        inputs |= {
            "p1": module.value("p1").detach().numpy(),
            "p2": module.value("p2").detach().numpy(),
        }
    reference = SPATIAL_REFERENCES[family]
    np.testing.assert_allclose(y.detach().numpy(), reference(x_np, inputs), rtol=1e-10, atol=1e-12)
    weights = rng.normal(size=y.shape)
    (y * torch.tensor(weights)).sum().backward()
    assert x.grad is not None
    np.testing.assert_allclose(
        x.grad.numpy(), _numeric_gradient(reference, inputs, "x", weights), rtol=1e-6, atol=1e-7
    )
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        numeric = _numeric_gradient(reference, inputs, name, weights)
        np.testing.assert_allclose(p.grad.numpy(), numeric, rtol=1e-6, atol=1e-7, err_msg=name)
    assert torch.autograd.gradcheck(module, (x.detach()[:1].clone().requires_grad_(True),))


# -- low precision ------------------------------------------------------------------------
def _low_precision_configs() -> list[Any]:
    configs = [_case(name) for name in [*FAMILIES, *ALIASES]]
    for name, family in FAMILIES.items():
        configs += [_case(name, preset, preset=preset) for preset in family.presets]
    configs += [_case("pau", form, options={"form": form}) for form in PAU_FORMS]
    configs += [_case("opau", basis, options={"basis": basis}) for basis in OPAU_BASES]
    configs += [_case("gelu", "tanh", options={"approximate": "tanh"})]
    return configs


def _wide_input(module: ActivationModule, dtype: torch.dtype) -> torch.Tensor:
    points = torch.cat([torch.linspace(-20, 20, 81), torch.tensor([0.0, 1e-3, -1e-3])])
    width = module.channels * module.width_factor
    if module.pointwise:
        x = points[:, None].expand(-1, width)
    else:
        x = points[:, None, None, None].expand(-1, width, 3, 3)
    return x.contiguous().to(dtype).requires_grad_(True)


@pytest.mark.parametrize("mode", ["bf16-autocast", "bf16", "fp16"])
@pytest.mark.parametrize("config", _low_precision_configs())
def test_no_nan_or_inf_in_low_precision(config: dict[str, Any], mode: str) -> None:
    module = build_activation(config, 2)
    assert isinstance(module, ActivationModule)
    dtype = {"bf16-autocast": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
    x = _wide_input(module, dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16-autocast"):
        y = module(x)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in module.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_trap_smu_mu_1e6_in_fp16() -> None:
    module = build_activation({"family": "smu", "preset": "early_code"})
    x = torch.tensor([-3.0, -1e-3, 0.0, 1e-3, 3.0], dtype=torch.float16, requires_grad=True)
    y = module(x)
    assert torch.isfinite(y).all()
    expected = F.leaky_relu(x.detach().float(), 0.25)
    assert torch.allclose(y.float(), expected, atol=1e-3)
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.isfinite(module.log_mu.grad).all()
    assert module.value("mu").item() == pytest.approx(1e6, rel=1e-6)  # μ kept in fp32


@pytest.mark.parametrize("preset", ["early_code", "later_code"])
def test_trap_smu1_tiny_mu_in_fp16(preset: str) -> None:
    module = build_activation({"family": "smu1", "preset": preset})
    x = torch.zeros(3, dtype=torch.float16, requires_grad=True)
    y = module(x)
    y.float().sum().backward()
    assert torch.isfinite(y).all()
    alpha = FAMILIES["smu1"].presets[preset]["alpha"]
    assert x.grad is not None and torch.allclose(
        x.grad.float(), torch.full((3,), (1 + alpha) / 2), atol=1e-3
    )
    assert torch.isfinite(module.log_mu.grad).all() and module.log_mu.grad.item() != 0
    assert module.value("mu").item() > 0


@pytest.mark.parametrize("cast", ["half", "bfloat16"])
@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({"family": "smu", "params": {"mu": 1e6}}, "mu"),
        ({"family": "smu1", "preset": "early_code"}, "mu"),
        ({"family": "swish", "params": {"beta": 1e6}}, "beta"),
    ],
    ids=["smu-mu-1e6", "smu1-mu-4e-9", "swish-beta-1e6"],
)
def test_positive_parameters_survive_a_module_cast(
    config: dict[str, Any], name: str, cast: str
) -> None:
    """`module.half()` / `.bfloat16()` stores log μ in 16 bits; μ itself (exp(log μ)) would
    overflow fp16 at 1e6 (output NaN at x = 0) and underflow it at 4e-9 (μ = 0)."""
    wide = build_activation(config)
    assert isinstance(wide, ActivationModule)
    narrow = getattr(build_activation(config), cast)()
    dtype = torch.float16 if cast == "half" else torch.bfloat16
    assert getattr(narrow, f"log_{name}").dtype == dtype
    want = wide.value(name).item()
    # log μ rounded to 16 bits moves μ by up to 0.8% (fp16) or 6.5% (bf16) for |log μ| < 32
    assert narrow.value(name).item() == pytest.approx(want, rel=0.02 if cast == "half" else 0.07)
    x = torch.tensor([-3.0, -1e-3, 0.0, 1e-3, 3.0], requires_grad=True)
    y = narrow(x.detach().to(dtype).requires_grad_())
    assert torch.isfinite(y).all(), y
    assert torch.allclose(y.float(), wide(x).detach(), rtol=2e-2, atol=1e-3)
    y.float().sum().backward()
    for pname, p in narrow.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_trap_pau_at_20_in_fp16(form: str) -> None:
    module = build_activation({"family": "pau", "options": {"form": form}})
    x = torch.tensor([-20.0, -10.0, 10.0, 20.0], requires_grad=True)
    reference = module(x.detach().double()).double()
    x16 = x.detach().half().requires_grad_(True)
    y = module(x16)
    y.float().sum().backward()
    assert torch.isfinite(y).all() and x16.grad is not None and torch.isfinite(x16.grad).all()
    assert torch.allclose(y.double(), reference, rtol=2e-3, atol=1e-2)


def test_pau_clamp_limits_the_input() -> None:
    module = build_activation({"family": "pau", "clamp": 3.0})
    x = torch.tensor([-20.0, -3.0, 3.0, 20.0])
    y = module(x)
    assert y[0] == y[1] and y[2] == y[3]


# -- identities ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_smu_alpha0_mu_inv_sqrt2_is_exact_gelu(dtype: torch.dtype) -> None:
    module = build_activation(
        {"family": "smu", "params": {"alpha": 0.0, "mu": 1 / math.sqrt(2)}}
    ).to(dtype)
    x = torch.linspace(-10, 10, 2001, dtype=dtype)
    assert (module(x) - F.gelu(x)).abs().max().item() < 1e-6


def test_smu1_at_zero_is_mu_over_two() -> None:
    module = build_activation({"family": "smu1", "params": {"mu": 0.8}}).double()
    assert module(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(0.4)


def test_pau_fitted_leaky_relu_reproduces_published_curve() -> None:
    """ACTIVATIONS.md §2: the form-A (5,4) LeakyReLU fit vs the published coefficients."""
    module = build_activation({"family": "pau", "init_target": "leaky_relu"}).double()
    x = np.linspace(-3, 3, 1201)
    fitted = module(torch.tensor(x)).detach().numpy()
    published, _, _ = REFERENCES["pau"](x, PAU_REFERENCE_LEAKY_RELU, {"form": "A"})
    assert np.abs(fitted - published).max() < 1e-3
    preset = build_activation({"family": "pau", "preset": "reference_leaky_relu"}).double()
    # Coefficients are stored in fp32: the preset's curve agrees to fp32 rounding.
    np.testing.assert_allclose(preset(torch.tensor(x)).detach().numpy(), published, atol=1e-6)


def test_aliases_fix_their_settings() -> None:
    assert get_family("hp1").name == "opau" and get_alias("hp1") is not None
    hp1 = build_activation({"family": "hp1"})
    hp2 = build_activation({"family": "hp2"})
    assert (hp1.options["basis"], hp2.options["basis"]) == ("hermite_h", "hermite_he")
    silu = build_activation({"family": "silu"})
    x = torch.linspace(-5, 5, 11)
    assert torch.allclose(silu(x), F.silu(x)) and not list(silu.parameters())
    with pytest.raises(ValueError, match="fixed"):
        build_activation({"family": "hp1", "options": {"basis": "legendre"}})


def test_rrelu_samples_slopes_in_training() -> None:
    module = build_activation({"family": "rrelu"}).train()
    x = -torch.ones(10_000)
    slopes = module(x) / x
    assert slopes.min() >= 0.125 - 1e-6 and slopes.max() <= 1 / 3 + 1e-6
    assert slopes.std() > 0.01
