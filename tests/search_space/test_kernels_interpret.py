"""Fused Triton kernels run on the CPU by Triton's interpreter, against the float64 reference.

TRITON_INTERPRET must be set before triton is imported, so the kernels run in one child
process (`python -m tools.kernel_checks --matrix interpret --json`) with the variable set there
only: this pytest process (and so every other test) never sees it.

Every kernel, module and compile case runs with both backward kernels (v1, and v2 whose ids end
in -bwd_v2; v2 with small tiles there, `kernel_checks.INTERPRET_BWD2`, so programs loop over several).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from search_space import kernels
from search_space.kernels import reference
from tools import kernel_checks
from tools.host_ops import HostOpCounter

ROOT = Path(__file__).resolve().parents[2]
CASES = kernel_checks.cases("interpret")
MODULE_CASES = kernel_checks.module_cases("interpret")
COMPILE_CASES = kernel_checks.compile_cases("interpret")


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict[str, Any]]:
    """Run every interpreter case once in a child process; results keyed by case id."""
    env = {k: v for k, v in os.environ.items() if k != "ACTSEARCH_FUSED"}
    env.update(TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.kernel_checks", "--matrix", "interpret", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if "id" in row:
                results[row["id"]] = row
    assert results, f"the interpreter run printed no results:\n{proc.stderr[-4000:]}"
    return results


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kernel_matches_reference(
    case: kernel_checks.Case, interpreted: dict[str, dict[str, Any]]
) -> None:
    """Values and gradients (x and every parameter) within tolerance, layout kept."""
    result = interpreted.get(case.id)
    assert result is not None, f"{case.id} was not run (child process died?)"
    assert result["ok"], json.dumps(result, indent=1)


@pytest.mark.parametrize("case", MODULE_CASES, ids=[c.id for c in MODULE_CASES])
def test_module_fused_path_matches_reference(
    case: kernel_checks.ModuleCase, interpreted: dict[str, dict[str, Any]]
) -> None:
    """A module's forward on the fused path (stored tensors, log-space mu/beta) vs float64."""
    result = interpreted.get(case.id)
    assert result is not None, f"{case.id} was not run (child process died?)"
    assert result["ok"], json.dumps(result, indent=1)


@pytest.mark.parametrize("case", COMPILE_CASES, ids=[c.id for c in COMPILE_CASES])
def test_compiled_module_matches_eager(
    case: kernel_checks.CompileCase, interpreted: dict[str, dict[str, Any]]
) -> None:
    """torch.compile(fullgraph=True, backend="eager") captures the registered ops, bit for bit.

    (AOTAutograd/Inductor cannot trace interpreted kernels: test_kernels_cuda.py compiles those.)
    """
    result = interpreted.get(case.id)
    assert result is not None, f"{case.id} was not run (child process died?)"
    assert result["ok"], json.dumps(result, indent=1)


# Host-side torch ops per fused call, launches excluded (bench/activations.py --host-ops has the
# full table; before issue 8's host-time work the modules' fused step issued 8-15 forward and
# 7-18 backward). ReLU's module issues 2 + 2.
MAX_FWD_OPS = 3  # table pack (stack/cat; + an expand when scopes are mixed), output
MAX_BWD_OPS = 4  # dx and partial buffers, one reduction, one split


@pytest.mark.parametrize(
    "config",
    [
        {"family": "smu"},
        {"family": "smu", "trainable": {"alpha": True}},
        {"family": "swish"},
        {"family": "pau", "options": {"form": "B"}},
        {"family": "opau", "options": {"basis": "laguerre", "k": 8, "l": 8}},
    ],
    ids=lambda c: c["family"] + str(c.get("trainable", "")),
)
@pytest.mark.parametrize("scope", ["shared", "per_layer", "per_channel"])
@pytest.mark.parametrize("bwd", kernels.BWD_VARIANTS)
def test_fused_step_issues_few_torch_ops(config: dict[str, Any], scope: str, bwd: str) -> None:
    """One fused forward and backward through a module: few aten ops besides the two launches.

    Runs in this process with the launches stubbed out (no interpreter, no GPU needed): only
    the host-side work around them is counted. Both backward kernels issue the same ops.
    """
    from search_space.build import ActivationFactory
    from search_space.modules.base import LOG_MAX, LOG_MIN

    factory = ActivationFactory({**config, "scope": scope})
    factory(4)
    module = factory(4)  # the second site: shares the first's Parameters at scope "shared"
    x = torch.randn(2, 4, 3, 3).contiguous(memory_format=torch.channels_last).requires_grad_()
    dy = torch.randn_like(x)
    stored = [getattr(module, s.attr) for s in module._stored.values()]
    log_scale = [s.positive for s in module._stored.values()]
    fn = kernels.module_kernel(
        module.family, module.options, log_scale=log_scale, log_bounds=(LOG_MIN, LOG_MAX)
    )
    assert fn is not None and fn == module.fused_kernel  # what the module chose when built
    wrt = [x, *module.parameters()]
    with HostOpCounter(stub_launches=True) as counter, kernels.backward_variant(bwd):
        torch.autograd.grad(fn(x, *stored), wrt, dy)  # warm the plan cache
        y, fwd_ops, fwd_launches = counter.count(lambda: fn(x, *stored))
        _, bwd_ops, bwd_launches = counter.count(lambda: torch.autograd.grad(y, wrt, dy))
    assert (fwd_launches, bwd_launches) == (1, 1)
    assert len(fwd_ops) <= MAX_FWD_OPS, fwd_ops
    assert len(bwd_ops) <= MAX_BWD_OPS, bwd_ops


def test_modules_choose_their_fused_kernel_once_from_resolved_options() -> None:
    """A module's kernel comes from its resolved options (registry defaults filled in) when it is
    built; module_kernel never supplies defaults of its own; the choice pickles with the module."""
    from search_space.build import build_activation
    from search_space.kernels._ids import Op, OpauBasis, PauForm

    pau = build_activation({"family": "pau", "options": {"form": "C", "m": 3}})
    assert pau.options == {"form": "C", "m": 3, "n": 4}
    assert pau.fused_kernel == kernels.module_kernel("pau", pau.options)
    spec = pau.fused_kernel.spec
    assert (spec.family, spec.opt, spec.m, spec.n, spec.widths) == (Op.PAU, PauForm.C, 3, 4, (4, 5))
    opau = build_activation({"family": "hp2"})
    assert opau.fused_kernel.spec.opt == OpauBasis.HERMITE_HE
    assert (opau.fused_kernel.spec.m, opau.fused_kernel.spec.n) == (5, 4)
    smu = build_activation({"family": "smu", "trainable": {"alpha": True}})
    assert smu.fused_kernel.spec.positive == 0b10  # mu is stored as log(mu), alpha as is
    assert build_activation({"family": "pau", "options": {"form": "unsafe"}}).fused_kernel is None
    assert build_activation({"family": "relu"}).fused_kernel is None
    with pytest.raises(ValueError, match=r"resolved options .* 'n' is missing"):
        kernels.module_kernel("pau", {"form": "A", "m": 5})
    assert pickle.loads(pickle.dumps(pau)).fused_kernel == pau.fused_kernel
    # no interpreter in this process: forward keeps the reference path on CPU tensors
    assert pau.fused_stored_kernel(torch.zeros(2, 1)) is None


def test_matrix_covers_every_family_form_basis_scope_layout() -> None:
    """The interpreter sample reaches every family, PAU form, OPAU basis, scope and layout."""
    names = {(c.config.family, c.config.option) for c in CASES}
    assert {("pau", f) for f in "ABC"} <= names
    assert {("opau", b) for b in kernels.OPAU_BASES} <= names
    assert {("smu", "smu"), ("smu1", "smu1"), ("swish", "")} <= names
    combos = {(c.scope, c.layout, c.dtype) for c in CASES}
    assert {
        (s, layout, "fp32")
        for s in ("shared", "per_channel")
        for layout in ("contiguous", "channels_last", "2d")
    } <= combos
    assert {
        ("per_channel", "contiguous", "bf16"),
        ("per_channel", "channels_last", "bf16"),
        ("shared", "channels_last", "bf16"),
    } <= combos
    assert any(c.config.m == 8 and c.config.n == 8 for c in CASES)


def test_interpreter_matrix_checks_both_backwards_alike() -> None:
    """Backward v2 meets exactly the configs, scopes, layouts and dtypes v1 does (kernel,
    module and compile cases)."""
    for found in (CASES, MODULE_CASES, [c.module for c in COMPILE_CASES]):
        by_bwd: dict[str, set[str]] = {}
        for c in found:
            by_bwd.setdefault(c.bwd, set()).add(c.id.removesuffix("-bwd_v2"))
        assert set(by_bwd) == {"v1", "v2"}
        assert by_bwd["v1"] == by_bwd["v2"]


def test_cuda_matrix_covers_scopes_layouts_dtypes() -> None:
    """Every family/form/basis meets every scope, layout and fp32/bf16; defaults fp16 too.
    Backward v2: every family/form/basis, scope and layout in fp32 at least."""
    cuda = kernel_checks.cases("cuda")
    combos = {(c.config.name, c.scope, c.layout, c.dtype) for c in cuda if c.bwd == "v1"}
    combos_v2 = {(c.config.name, c.scope, c.layout, c.dtype) for c in cuda if c.bwd == "v2"}
    for cfg in kernel_checks.configs("cuda"):
        for scope in ("shared", "per_channel"):
            for layout in ("contiguous", "channels_last", "2d"):
                for dt in ("fp32", "bf16"):
                    assert (cfg.name, scope, layout, dt) in combos
                assert (cfg.name, scope, layout, "fp32") in combos_v2


def test_backward_variant_is_checked_and_planned_apart() -> None:
    """Unknown variants fail with the valid names; each variant gets its own cached plan."""
    from search_space.kernels import _plan
    from search_space.kernels._ids import Op, PauForm

    with pytest.raises(ValueError, match="use one of v1, v2"), kernels.backward_variant("v3"):
        pass
    x = torch.zeros(2, 3, 4, 4)
    spec = _plan.OpSpec(Op.PAU, PauForm.A, 5, 4, (6, 4))
    plans = {}
    for bwd in kernels.BWD_VARIANTS:
        with kernels.backward_variant(bwd):
            plans[bwd] = _plan.plan_for(x, True, spec)
    assert _plan.BWD_VARIANT == "v1"
    assert plans["v1"].bwd_kernel == "act_bwd_kernel"
    assert plans["v2"].bwd_kernel == "act_bwd_loop_kernel"
    assert "FOLD" in plans["v2"].bwd_kwargs[True, True]


def test_v2_programs_per_sm_from_registers() -> None:
    """The v2 grid is one wave: programs per SM from registers, warps and shared memory."""
    from search_space.kernels._plan import programs_per_sm

    assert programs_per_sm(121, 1024, 4) == 4  # 128 regs x 128 threads: 16K of the SM's 64K
    assert programs_per_sm(56, 16, 4) == 9  # registers still decide
    assert programs_per_sm(32, 0, 4) == 16  # 2048 threads per SM
    assert programs_per_sm(255, 0, 8) == 1
    assert programs_per_sm(40, 100_000, 1) == 2  # shared memory decides


def test_this_process_has_no_interpreter_flag() -> None:
    """The interpreter flag stays in the child: other tests import triton normally."""
    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0")


def test_available_needs_cuda_and_respects_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU tensors only under the interpreter; ACTSEARCH_FUSED=0 turns the kernels off."""
    x = torch.zeros(2, 3)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not kernels.available(x)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.available(x)
    assert not kernels.available(x.double())
    monkeypatch.setenv("ACTSEARCH_FUSED", "0")
    assert not kernels.available(x)


def test_bad_parameter_shapes_say_what_to_pass() -> None:
    """Shapes that fit neither scope, unknown options and too-high degrees fail clearly."""
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"pass shape \(1,\) or \(C, 1\)"):
        kernels.smu(x, torch.ones(2), torch.ones(1))
    with pytest.raises(ValueError, match="unknown PAU form"):
        kernels.pau(x, torch.ones(6), torch.ones(4), form="D")
    with pytest.raises(ValueError, match="unknown OPAU basis"):
        kernels.opau(x, torch.ones(6), torch.ones(4), basis="bessel")
    with pytest.raises(ValueError, match="outside what the fused kernel supports"):
        kernels.pau(x, torch.ones(10), torch.ones(4))
    with pytest.raises(ValueError, match="unknown SMU variant"):
        kernels.smu(x, torch.ones(1), torch.ones(1), variant="smu2")


def test_reference_bases_match_scipy() -> None:
    """The reference's recurrences give SciPy's orthogonal polynomials."""
    special = pytest.importorskip("scipy.special")
    grid = torch.linspace(-3, 3, 61, dtype=torch.float64)
    funcs = {
        "chebyshev_t": special.eval_chebyt,
        "chebyshev_u": special.eval_chebyu,
        "hermite_h": special.eval_hermite,
        "hermite_he": special.eval_hermitenorm,
        "laguerre": special.eval_laguerre,
        "legendre": special.eval_legendre,
    }
    for name, func in funcs.items():
        for n, f in enumerate(reference.basis(grid, 8, name)):
            want = torch.as_tensor(func(n, grid.numpy()))
            assert torch.allclose(f, want, rtol=1e-12, atol=1e-9), (name, n)


def test_reference_identities() -> None:
    """SMU(alpha=0, mu=1/sqrt 2) is GELU; SMU-1(0) = mu/2; Swish(beta=1) is SiLU."""
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    gelu = reference.smu(x, torch.tensor([0.0]), torch.tensor([1 / math.sqrt(2)]))
    assert torch.allclose(gelu, torch.nn.functional.gelu(x), atol=1e-12)
    zero = reference.smu(torch.zeros(1), torch.tensor([0.25]), torch.tensor([0.3]), "smu1")
    assert zero.item() == pytest.approx(0.15)
    assert torch.allclose(reference.swish(x, torch.tensor([1.0])), torch.nn.functional.silu(x))


def test_reference_pau_with_published_leaky_relu_fit() -> None:
    """The published form-A (5, 4) set (b_1..b_4 in order) reproduces LeakyReLU(0.01) on [-3, 3]."""
    a = torch.tensor(
        [3.35583603e-02, 5.05000375e-01, 1.65343934, 2.01001052, 9.31901999e-01, 1.52424124e-01],
        dtype=torch.float64,
    )
    b = torch.tensor(
        [3.30847488e-06, 3.98021568, 5.12471206e-07, 3.01830109e-01], dtype=torch.float64
    )
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    err = reference.pau(x, a, b, "A") - torch.nn.functional.leaky_relu(x, 0.01)
    assert err.abs().max() < 0.05
