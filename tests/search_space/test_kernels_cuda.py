"""Fused Triton kernels on a CUDA GPU: the full correctness matrix, determinism, int64 indexing.

Every case draws fresh random inputs (the seed is printed on failure) and compares values and
gradients with the float64 PyTorch reference: relative error < 1e-5 (fp32), < 1e-2 (bf16/fp16),
or within 2x the PyTorch path's own error in that precision (see kernel_checks.run_case).
Both backward kernels are checked: v1 and v2 (ids ending in -bwd_v2, or parametrized `bwd`).
Run on the device machine: python -m pytest tests/search_space/test_kernels_cuda.py -q -m cuda
(only the v2 checks: add `-k "v2"`).
"""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

from search_space import kernels
from search_space.kernels import _plan
from search_space.kernels._ids import Op, PauForm
from tools import kernel_checks

pytestmark = pytest.mark.cuda

CASES = kernel_checks.cases("cuda")
MODULE_CASES = kernel_checks.module_cases("cuda")
SEED = random.SystemRandom().randrange(2**31)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.id for c in CASES])
def test_kernel_matches_reference(index: int) -> None:
    """Values and gradients of x and every parameter within tolerance; layout kept."""
    result = kernel_checks.run_case(CASES[index], "cuda", SEED + index)
    assert result["ok"], f"seed {SEED + index}: " + json.dumps(result, indent=1)


@pytest.mark.parametrize("index", range(len(MODULE_CASES)), ids=[c.id for c in MODULE_CASES])
def test_module_fused_path_matches_reference(index: int) -> None:
    """A module on the fused path (stored tensors, log-space mu/beta) vs its float64 reference."""
    result = kernel_checks.run_module_case(MODULE_CASES[index], "cuda", SEED + index)
    assert result["ok"], f"seed {SEED + index}: " + json.dumps(result, indent=1)


@pytest.mark.skipif(
    not hasattr(torch.library, "triton_op"), reason="torch.library.triton_op needs torch >= 2.6"
)
@pytest.mark.parametrize(
    "config",
    [{"family": "smu"}, {"family": "swish"}, {"family": "pau"}, {"family": "opau"}],
    ids=lambda c: c["family"],
)
@pytest.mark.parametrize("bwd", kernels.BWD_VARIANTS)
def test_compiled_module_matches_eager(config: dict[str, str], bwd: str) -> None:
    """torch.compile captures the fused op (no graph break) and agrees with eager."""
    from search_space.build import build_activation

    torch.manual_seed(0)
    torch._dynamo.reset()
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        build_activation({**config, "scope": "per_channel"}, 16),
    ).cuda()
    x = torch.randn(8, 3, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(net, fullgraph=True)
    results = []
    with kernels.backward_variant(bwd):
        for f in (net, compiled):
            net.zero_grad(set_to_none=True)
            y = f(x)
            (y * torch.linspace(-1, 1, y.numel(), device="cuda").reshape(y.shape)).sum().backward()
            results.append([y.detach().clone(), *(p.grad.clone() for p in net.parameters())])
    for got, want in zip(results[1], results[0], strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scope", ["shared", "per_channel"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bwd", kernels.BWD_VARIANTS)
def test_backward_is_deterministic(scope: str, layout: str, bwd: str) -> None:
    """Two backward passes on the same inputs give bitwise-equal dx and parameter gradients
    (v2: the first call sizes the grid; later calls must reuse it)."""
    x = torch.randn(64, 64, 32, 32, device="cuda", dtype=torch.bfloat16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    lead = (64,) if scope == "per_channel" else ()
    a = (0.5 * torch.randn(*lead, 6, device="cuda")).requires_grad_()
    b = (0.5 * torch.randn(*lead, 4, device="cuda")).requires_grad_()
    dy = torch.randn_like(x)
    runs = []
    _plan.clear_plans()
    with kernels.backward_variant(bwd):
        for _ in range(2):
            xg = x.clone().requires_grad_()
            y = kernels.pau(xg, a, b, form="A")
            runs.append(torch.autograd.grad(y, [xg, a, b], dy))
    for first, second in zip(runs[0], runs[1], strict=True):
        assert torch.equal(first, second)


V2_GRID_CASES = [
    kernel_checks.Case(kernel_checks.Config(*cfg), scope, layout, "bf16", (16, 64, 32, 32), "v2")
    for cfg in [("pau", "A", 5, 4), ("opau", "hermite_h", 8, 8), ("smu", "smu")]
    for scope in ("shared", "per_channel")
    for layout in ("contiguous", "channels_last")
]


@pytest.mark.parametrize("per_sm", [1, 3, 0], ids=["1_per_sm", "3_per_sm", "occupancy"])
@pytest.mark.parametrize("index", range(len(V2_GRID_CASES)), ids=[c.id for c in V2_GRID_CASES])
def test_backward_v2_at_any_program_count(index: int, per_sm: int) -> None:
    """v2 is exact whatever the number of programs (1 per SM: ~60 tiles each here; 0: the
    default, as many as are resident, sized from the compiled kernel)."""
    case = V2_GRID_CASES[index]
    with kernel_checks.kernel_settings(BWD2_PROGRAMS_PER_SM=per_sm):
        result = kernel_checks.run_case(case, "cuda", SEED + index)
    assert result["ok"], f"seed {SEED + index}: " + json.dumps(result, indent=1)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_v2_grid_comes_from_the_compiled_kernel(layout: str) -> None:
    """The default v2 grid is sized from the compiled kernel's registers (not the fallback)."""
    x = torch.empty(16, 64, 32, 32, device="cuda", dtype=torch.bfloat16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    table = torch.zeros(10, 64, device="cuda")
    with kernels.backward_variant("v2"):
        plan = _plan.make_plan(x, True, _plan.OpSpec(Op.PAU, PauForm.A, 5, 4, (6, 4)))
    resident = _plan.resident_programs(plan, x, table)
    assert resident.source == "occupancy", resident
    assert 1 <= resident.per_sm <= 32 and resident.regs > 0, resident
    grid, (tiles,) = _plan.backward_grid(plan, x, table)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    assert grid[0] * grid[1] <= sms * resident.per_sm and grid[0] <= tiles


def test_autocast_bf16_keeps_dtype_and_matches() -> None:
    """Under bf16 autocast after a conv, the op returns bf16 and the parameters get fp32 grads."""
    conv = torch.nn.Conv2d(3, 16, 3, padding=1).cuda()
    mu = torch.tensor([1.3], device="cuda", requires_grad=True)
    alpha = torch.tensor([0.25], device="cuda")
    x = torch.randn(8, 3, 16, 16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = conv(x)
        y = kernels.smu(h, alpha, mu)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert mu.grad is not None and mu.grad.dtype == torch.float32
    assert torch.isfinite(mu.grad).all()


def test_module_kernel_matches_module_reference_functions() -> None:
    """module_kernel(family) takes the modules' broadcast-shaped arguments and agrees with them."""
    functional = pytest.importorskip("search_space.modules.functional")
    x = torch.randn(8, 12, 9, 9, device="cuda").contiguous(memory_format=torch.channels_last)
    per_c = (12, 1, 1)
    cases = [
        ("smu", {}, functional.smu, [torch.rand(per_c) * 0.4, torch.rand(per_c) + 0.5]),
        ("smu1", {}, functional.smu1, [torch.rand(()) * 0.4, torch.rand(()) + 0.1]),
        ("swish", {}, functional.swish, [torch.rand(per_c) + 0.5]),
        (
            "pau",
            {"form": "C", "m": 5, "n": 4},
            functional.pau_c,
            [torch.randn(6, *per_c), torch.randn(5, *per_c)],
        ),
        (
            "opau",
            {"basis": "legendre", "k": 5, "l": 4},
            lambda x, c, d: functional.opau(x, c, d, "legendre"),
            [torch.randn(6), torch.randn(4)],
        ),
    ]
    for family, options, ref, params in cases:
        fn = kernels.module_kernel(family, options)
        assert fn is not None, family
        ps = [p.cuda().requires_grad_() for p in params]
        y = fn(x, *ps)
        gk = torch.autograd.grad(y.sum(), ps)
        pr = [p.detach().clone().requires_grad_() for p in ps]
        yr = ref(x, *pr)
        gr = torch.autograd.grad(yr.sum(), pr)
        assert torch.allclose(y, yr, rtol=1e-4, atol=1e-5), family
        for g, w in zip(gk, gr, strict=True):
            assert torch.allclose(g, w, rtol=1e-3, atol=1e-3), family
    assert kernels.module_kernel("pau", {"form": "unsafe", "m": 5, "n": 4}) is None
    assert kernels.module_kernel("relu", {}) is None


def test_more_than_int32_elements() -> None:
    """Tensors past 2**31 elements index with int64 (checked on the memory's tail).

    One test for the three layouts so that one worker holds the ~17 GB at a time.
    """
    shape = (2, 64, 4097, 4097)  # 2.149e9 elements
    for layout, bwd in itertools.product(("shared", "contiguous", "channels_last"), ("v1", "v2")):
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        per_channel = layout != "shared"
        beta = torch.rand(64 if per_channel else 1, device="cuda") + 0.5
        x.requires_grad_()
        with kernels.backward_variant(bwd):
            y = kernels.swish(x, beta)
            (dx,) = torch.autograd.grad(y, [x], torch.ones_like(y))
        # the last rows of the last image: past 2**31 in both memory formats
        tail = x.detach()[-1:, :, -64:, :].float()
        b = beta.view(1, -1, 1, 1) if per_channel else beta
        s = torch.sigmoid(b * tail)
        assert torch.allclose(y[-1:, :, -64:, :].float(), tail * s, rtol=1e-2, atol=1e-2), layout
        want_dx = s + b * tail * s * (1 - s)
        got_dx = dx[-1:, :, -64:, :].float()
        assert torch.allclose(got_dx, want_dx, rtol=1e-2, atol=1e-2), (layout, bwd)
        del x, y, dx
        torch.cuda.empty_cache()
