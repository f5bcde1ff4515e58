"""On a CUDA GPU: modules with the fused kernels agree with the reference path, and every family
stays finite under bf16 autocast and fp16 inputs (run on the device machine)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from search_space.build import build_activation
from search_space.modules.base import ActivationModule
from search_space.registry import ALIASES, FAMILIES, OPAU_BASES

pytestmark = pytest.mark.cuda

FUSED_CASES: list[dict[str, Any]] = [
    {"family": "smu"},
    {"family": "smu", "trainable": {"alpha": True}},
    {"family": "smu1"},
    {"family": "swish"},
    {"family": "silu"},
    {"family": "pau", "options": {"form": "A"}},
    {"family": "pau", "options": {"form": "B"}},
    {"family": "pau", "options": {"form": "C"}},
    {"family": "pau", "options": {"form": "A", "m": 8, "n": 8}},
    *({"family": "opau", "options": {"basis": b}} for b in OPAU_BASES),
]


def _pair(
    config: dict[str, Any], scope: str, channels: int
) -> tuple[ActivationModule, ActivationModule]:
    torch.manual_seed(0)
    fused = build_activation({**config, "scope": scope}, channels).cuda()
    with torch.no_grad():  # distinct per-channel values, so channel indexing is exercised
        for p in fused.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference = build_activation({**config, "scope": scope}, channels).cuda()
    reference.load_state_dict(fused.state_dict())
    reference.allow_fused = False
    return fused, reference


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("scope", ["shared", "per_channel"])
@pytest.mark.parametrize(
    "config", FUSED_CASES, ids=lambda c: f"{c['family']}-{c.get('options', '')}"
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_modules_match_the_reference(
    config: dict[str, Any], scope: str, dtype: torch.dtype
) -> None:
    fused, reference = _pair(config, scope, 16)
    x = (
        (torch.randn(8, 16, 8, 8, device="cuda") * 2)
        .to(dtype)
        .contiguous(memory_format=torch.channels_last)
    )
    # the fused kernel really is in use (forward takes it from fused_stored_kernel)
    assert fused.fused_stored_kernel(x) is fused.fused_kernel is not None
    assert reference.fused_stored_kernel(x) is None  # allow_fused = False
    outputs = []
    for module in (fused, reference):
        xi = x.detach().clone().requires_grad_(True)
        y = module(xi)
        assert y.dtype == dtype and torch.isfinite(y).all()
        weights = torch.linspace(-1, 1, y.numel(), device="cuda").reshape(y.shape)
        (y.float() * weights).sum().backward()
        grads = [xi.grad] + [p.grad for p in module.parameters()]
        outputs.append((y, grads))
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert _relative(outputs[0][0], outputs[1][0]) < tolerance
    for got, want in zip(outputs[0][1], outputs[1][1], strict=True):
        assert got is not None and want is not None
        assert _relative(got, want) < max(tolerance, 1e-4)


def _all_configs() -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = [{"family": n} for n in [*FAMILIES, *ALIASES]]
    for name, family in FAMILIES.items():
        configs += [{"family": name, "preset": p} for p in family.presets]
    return configs


@pytest.mark.parametrize("mode", ["bf16-autocast", "fp16-autocast", "fp16"])
def test_every_family_is_finite_in_low_precision_on_cuda(mode: str) -> None:
    points = torch.cat([torch.linspace(-20, 20, 81), torch.tensor([0.0, 1e-3, -1e-3])]).cuda()
    for config in _all_configs():
        module = build_activation(config, 4).cuda()
        width = 4 * module.width_factor
        if module.pointwise:
            x = points[:, None].expand(-1, width)
        else:
            x = points[:, None, None, None].expand(-1, width, 3, 3)
        dtype = torch.float16 if mode == "fp16" else torch.float32
        x = x.contiguous().to(dtype).requires_grad_(True)
        autocast = {"bf16-autocast": torch.bfloat16, "fp16-autocast": torch.float16}.get(mode)
        with torch.autocast("cuda", dtype=autocast or torch.float16, enabled=autocast is not None):
            y = module(x)
        assert y.dtype == dtype, config
        assert torch.isfinite(y).all(), config
        y.float().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), config
        for name, p in module.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), (config, name)


def test_smu_traps_on_cuda_fp16() -> None:
    for family, preset in (("smu", "early_code"), ("smu1", "early_code"), ("smu1", "later_code")):
        module = build_activation({"family": family, "preset": preset}).cuda()
        x = torch.tensor([-3.0, -1e-3, 0.0, 1e-3, 3.0], device="cuda", dtype=torch.float16)
        x.requires_grad_(True)
        y = module(x)
        y.float().sum().backward()
        assert torch.isfinite(y).all() and x.grad is not None and torch.isfinite(x.grad).all()
        assert torch.isfinite(module.log_mu.grad).all()
