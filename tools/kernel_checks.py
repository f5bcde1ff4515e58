"""Correctness checks of the fused kernels against the float64 PyTorch reference.

Each case draws fresh random inputs (a few exact zeros in x, one exactly-zero denominator
coefficient for PAU-A/OPAU), runs the kernel's forward and backward, and reports
‖kernel − reference‖ / ‖reference‖ for y, dx and every parameter's gradient.

Every case names the backward it checks (`bwd`: "v1", the per-tile reduction, or "v2", the
persistent loop with register accumulators; see `search_space.kernels._plan`).

Run on the CPU through Triton's interpreter (the interpreter tests do this in a subprocess):
    TRITON_INTERPRET=1 python -m tools.kernel_checks --matrix interpret --json
or on a GPU:  python -m tools.kernel_checks --matrix cuda --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from search_space import kernels
from search_space.kernels import _plan, reference

# A kernel error above TOLERANCE still passes when it is within this factor of the PyTorch
# path's own error in the same precision on the same inputs (ill-conditioned inputs, e.g.
# PAU-C near a root of its denominator polynomial, where fp32 rounding decides; see run_case),
# and under HARD_CAP, which no implementation error survives.
CONDITION_FACTOR = 4.0
HARD_CAP = 1e-3
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Backward v2 under the interpreter: tiles small enough that the tests' tensors give every
# program several tiles (an uneven number, with masked tails), BR > 1 in INNER mode for the
# high-degree configs, and the in-thread pre-sum (FOLD) on.
INTERPRET_BWD2 = {"BWD2_TILE": 8, "BWD2_TILE_HIGH_DEGREE": 32, "BWD2_FOLD": 2}


@contextlib.contextmanager
def kernel_settings(**attrs: int) -> Iterator[None]:
    """Set tile/grid attributes of `search_space.kernels._plan` within the block (plans cleared
    on entry and exit, so they take effect and do not outlive it)."""
    saved = {k: getattr(_plan, k) for k in attrs}
    _plan.clear_plans()
    for k, v in attrs.items():
        setattr(_plan, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(_plan, k, v)
        _plan.clear_plans()


@dataclass(frozen=True)
class Config:
    """One kernel: family, option (SMU variant / PAU form / OPAU basis) and degrees."""

    family: str
    option: str = ""
    m: int = 0
    n: int = 0

    @property
    def name(self) -> str:
        """Short id, e.g. pau-A-5-4."""
        if self.family in ("pau", "opau"):
            return f"{self.family}-{self.option}-{self.m}-{self.n}"
        return self.family


@dataclass(frozen=True)
class Case:
    """A config with a parameter scope, a memory layout, a dtype and a shape."""

    config: Config
    scope: str  # shared | per_channel
    layout: str  # contiguous | channels_last | 2d
    dtype: str  # fp32 | bf16 | fp16
    shape: tuple[int, ...]
    bwd: str = "v1"  # the backward kernel: v1 | v2

    @property
    def id(self) -> str:
        """Test id (v2 cases end in -bwd_v2)."""
        dims = "x".join(map(str, self.shape))
        return f"{self.config.name}-{self.scope}-{self.layout}-{self.dtype}-{dims}{_bwd_suffix(self.bwd)}"


def _bwd_suffix(bwd: str) -> str:
    return "" if bwd == "v1" else f"-bwd_{bwd}"


def configs(matrix: str) -> list[Config]:
    """Kernels to check: every family, form and basis; a sample (interpret) or more degrees."""
    out = [Config("smu", "smu"), Config("smu1", "smu1"), Config("swish")]
    if matrix == "interpret":
        pau_deg = {
            "A": [(5, 4), (8, 8), (1, 1)],
            "B": [(5, 4), (3, 7), (8, 1)],
            "C": [(5, 4), (8, 8), (0, 0)],
        }
        opau_deg = [(5, 4), (8, 8)]
        extra = {
            "chebyshev_t": (0, 1),
            "hermite_he": (2, 6),
            "laguerre": (7, 3),
            "legendre": (1, 8),
        }
    else:
        pau_deg = {f: [(5, 4), (8, 8), (1, 1), (3, 7), (8, 2), (2, 5)] for f in "ABC"}
        pau_deg["C"].append((0, 0))
        opau_deg = [(5, 4), (8, 8), (1, 1), (3, 7), (8, 2)]
        extra = {
            "chebyshev_t": (0, 1),
            "hermite_he": (6, 6),
            "laguerre": (7, 3),
            "legendre": (1, 8),
        }
    for form, degs in pau_deg.items():
        out += [Config("pau", form, m, n) for m, n in degs]
    for basis in kernels.OPAU_BASES:
        degs = list(opau_deg) + ([extra[basis]] if basis in extra else [])
        out += [Config("opau", basis, m, n) for m, n in degs]
    return out


INTERPRET_BF16 = {
    ("per_channel", "contiguous"),
    ("per_channel", "channels_last"),
    ("shared", "channels_last"),
}
INTERPRET_SHAPES = {"contiguous": (2, 5, 3, 4), "channels_last": (2, 5, 3, 4), "2d": (7, 5)}
CUDA_SHAPES: dict[str, list[tuple[int, ...]]] = {
    "contiguous": [(8, 24, 17, 19), (16, 64, 32, 32), (64, 160, 4, 4)],
    "channels_last": [(8, 24, 17, 19), (16, 64, 32, 32), (64, 160, 4, 4)],
    "2d": [(300, 130), (4096, 16)],
}


def cases(matrix: str) -> list[Case]:
    """The case list: `interpret` (small, CPU) or `cuda` (full matrix, larger shapes).

    Backward v2 under the interpreter: the same cases as v1. On CUDA (compile time): every
    config, scope and layout in fp32 (the strict tolerance), and bf16 for the default degrees
    with per-channel 4-D input; its math is v1's (`_triton._bwd_math`), only tiling and
    accumulation differ.
    """
    out = []
    for i, cfg in enumerate(configs(matrix)):
        default = (cfg.m, cfg.n) in ((0, 0), (5, 4))
        for scope in ("shared", "per_channel"):
            for layout in ("contiguous", "channels_last", "2d"):
                if matrix == "interpret":
                    # bf16 where its path differs (per-channel 4-D, one shared layout): CI time
                    bf16 = (scope, layout) in INTERPRET_BF16
                    out += [
                        Case(cfg, scope, layout, dt, INTERPRET_SHAPES[layout], bwd)
                        for bwd in kernels.BWD_VARIANTS
                        for dt in (("fp32", "bf16") if bf16 else ("fp32",))
                    ]
                    continue
                shapes = CUDA_SHAPES[layout]
                shape = shapes[i % len(shapes)]
                dts = ("fp32", "bf16", "fp16") if default else ("fp32", "bf16")
                out += [Case(cfg, scope, layout, dt, shape) for dt in dts]
                v2 = ("fp32", "bf16") if default and (scope, layout) in CUDA_BF16_V2 else ("fp32",)
                out += [Case(cfg, scope, layout, dt, shape, "v2") for dt in v2]
    return out


CUDA_BF16_V2 = {("per_channel", "contiguous"), ("per_channel", "channels_last")}


def make_params(cfg: Config, channels: int | None, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Fresh constrained parameter values (fp32, CPU) in each family's working range."""
    lead = (channels,) if channels is not None else ()

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(lead + shape, generator=gen)

    def normal(scale: float, *shape: int) -> torch.Tensor:
        return scale * torch.randn(lead + shape, generator=gen)

    one = () if channels is not None else (1,)
    if cfg.family == "smu":
        return {"alpha": uniform(0.05, 0.45, *one), "mu": uniform(0.5, 2.5, *one)}
    if cfg.family == "smu1":
        return {"alpha": uniform(0.05, 0.45, *one), "mu": uniform(0.05, 1.0, *one)}
    if cfg.family == "swish":
        return {"beta": uniform(0.5, 2.0, *one)}
    if cfg.family == "pau":
        nb = cfg.n + 1 if cfg.option == "C" else cfg.n
        a, b = normal(0.7, cfg.m + 1), normal(0.5, nb)
        if cfg.option == "A" and nb:
            b.view(-1, nb)[0, 0] = 0.0  # |b| at 0: its gradient must be 0 (torch.abs)
        return {"a": a, "b": b}
    c, d = normal(0.7, cfg.m + 1), normal(0.5, cfg.n)
    if cfg.n:
        d.view(-1, cfg.n)[0, 0] = 0.0
    return {"c": c, "d": d}


def call(
    cfg: Config, x: torch.Tensor, params: dict[str, torch.Tensor], fused: bool
) -> torch.Tensor:
    """The fused kernel (fused=True) or the PyTorch reference on x."""
    mod: Any = kernels if fused else reference
    if cfg.family in ("smu", "smu1"):
        return mod.smu(x, params["alpha"], params["mu"], cfg.family)
    if cfg.family == "swish":
        return mod.swish(x, params["beta"])
    if cfg.family == "pau":
        return mod.pau(x, params["a"], params["b"], cfg.option)
    return mod.opau(x, params["c"], params["d"], cfg.option)


def make_input(case: Case, gen: torch.Generator, device: str) -> torch.Tensor:
    """x ~ N(0, 1) (post-normalisation activations) in the case's dtype and layout, a few 0s."""
    x = torch.randn(case.shape, generator=gen)
    x.view(-1)[:: max(x.numel() // 5, 1)] = 0.0
    x = x.to(device=device, dtype=DTYPES[case.dtype])
    if case.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


KINK_RTOL = 1e-5


def kink_mask(cfg: Config, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Elements (x != 0) within rounding distance of a root inside an absolute value."""
    near = torch.zeros_like(x, dtype=torch.bool)
    if cfg.family == "pau" and cfg.option in ("B", "C"):
        b = params["b"]
        first = 1 if cfg.option == "B" else 0
        terms = []
        xp = torch.ones_like(x)
        for k in range(b.shape[-1] + first):
            if k >= first:
                terms.append(reference._coef(b, k - first, x) * xp)
            xp = xp * x
        total = torch.stack(terms).sum(0)
        scale = torch.stack(terms).abs().sum(0)
        near = total.abs() <= KINK_RTOL * scale
    elif cfg.family == "opau" and cfg.n > 0:
        fs = reference.basis(x, max(cfg.n, 1), cfg.option)
        for j in range(1, cfg.n + 1):
            prev = fs[j - 1].abs() + (fs[j - 2].abs() if j >= 2 else 0)
            scale = 1 + prev * (2 * x.abs() + 2 * j)
            near |= fs[j].abs() <= KINK_RTOL * scale
    return near & (x != 0)


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got64 = got.detach().to(torch.float64).cpu()
    want64 = want.detach().to(torch.float64).cpu()
    if not torch.isfinite(got64).all():
        return math.inf
    denom = want64.norm().item()
    diff = (got64 - want64).norm().item()
    return diff / denom if denom > 0 else diff


def _poison(device: str, nbytes: int) -> None:
    """Leave NaNs in the CUDA allocator's free blocks so unwritten outputs show up."""
    if device.startswith("cuda"):
        junk = torch.full((nbytes // 4 + 1024,), float("nan"), device=device)
        del junk


def run_case(case: Case, device: str, seed: int) -> dict[str, Any]:
    """Errors of one case: {'id', 'errors': {y, dx, <param>...}, 'tolerance', 'ok'}."""
    gen = torch.Generator().manual_seed(seed)
    x = make_input(case, gen, device)
    channels = x.shape[1] if case.scope == "per_channel" else None
    params = {k: v.to(device) for k, v in make_params(case.config, channels, gen).items()}
    dy = torch.randn(case.shape, generator=gen).to(device=device, dtype=x.dtype)
    # |f| has a kink at each root of f: there the one-sided derivative is decided by fp32
    # rounding (seen on an H100: fp32+FMA put U_4(0.809017) at exactly 0, float64 at 1.2e-7).
    # Such elements get no upstream gradient; exact zeros of x stay, they test sign(0) = 0.
    kinks = kink_mask(
        case.config,
        x.detach().to(torch.float64),
        {k: v.to(torch.float64) for k, v in params.items()},
    )
    dy = dy.masked_fill(kinks, 0.0)

    xr = x.detach().to(torch.float64).requires_grad_()
    pr = {k: v.detach().to(torch.float64).requires_grad_() for k, v in params.items()}
    yr = call(case.config, xr, pr, fused=False)
    wrt = [xr, *pr.values()]
    grads = torch.autograd.grad(yr, wrt, dy.to(torch.float64), allow_unused=True)
    # a constant function (PAU-C of degree (0, 0)) leaves x out of the graph: its dx is 0
    gr = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)]

    _poison(device, 4 * x.numel() * x.element_size())
    xk = x.detach().clone().requires_grad_()
    pk = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    with kernels.backward_variant(case.bwd):
        kernel = _errors(case.config, xk, pk, dy, fused=True, want_y=yr, want=gr)
    # The PyTorch path in the same precision, against the same float64 reference: how well
    # fp32 arithmetic can do on these inputs at all (PAU-C near a root of its denominator
    # polynomial, say, is ill-conditioned for any fp32 implementation).
    torch_path = _errors(
        case.config,
        x.detach().clone().requires_grad_(),
        {k: v.detach().clone().requires_grad_() for k, v in params.items()},
        dy,
        fused=False,
        want_y=yr,
        want=gr,
    )
    tol = TOLERANCE[x.dtype]
    layout_kept = bool(kernel.pop("_layout_kept"))
    torch_path.pop("_layout_kept")
    within = [
        e < tol or (e <= CONDITION_FACTOR * torch_path[k] and e < HARD_CAP)
        for k, e in kernel.items()
    ]
    return {
        "id": case.id,
        "case": asdict(case),
        "errors": kernel,
        "torch_errors": torch_path,
        "tolerance": tol,
        "beyond_tolerance": sorted(k for k, e in kernel.items() if e >= tol),
        "layout_kept": layout_kept,
        "kink_elements": int(kinks.sum()),
        "ok": layout_kept and all(within),
    }


def _errors(
    cfg: Config,
    x: torch.Tensor,
    params: dict[str, torch.Tensor],
    dy: torch.Tensor,
    fused: bool,
    want_y: torch.Tensor,
    want: list[torch.Tensor],
) -> dict[str, float]:
    """Relative errors of y, dx and each parameter gradient, plus whether layouts were kept."""
    y = call(cfg, x, params, fused=fused)
    wrt = [x, *params.values()]
    grads = torch.autograd.grad(y, wrt, dy, allow_unused=True)
    got = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)]
    errors = {"y": _rel(y, want_y), "dx": _rel(got[0], want[0])}
    errors.update({f"d{k}": _rel(g, w) for k, g, w in zip(params, got[1:], want[1:], strict=True)})
    kept = y.stride() == x.stride() and got[0].stride() == x.stride()
    errors["_layout_kept"] = float(kept)
    return errors


# -- the modules' fused path (stored tensors, log-space parameters) --------------------------------

MODULE_CONFIGS: list[
    tuple[str, tuple[tuple[str, str | int], ...], tuple[tuple[str, bool], ...]]
] = [
    ("smu", (), ()),
    ("smu", (), (("alpha", True),)),
    ("smu1", (), ()),
    ("swish", (), ()),
    ("silu", (), ()),
    ("pau", (("form", "A"),), ()),
    ("pau", (("form", "B"),), ()),
    ("pau", (("form", "C"), ("m", 3), ("n", 2)), ()),
    ("opau", (("basis", "legendre"),), ()),
    ("opau", (("basis", "chebyshev_u"), ("k", 8), ("l", 8)), ()),
]


@dataclass(frozen=True)
class ModuleCase:
    """An activation module (family, options, trainable flags) at one scope, layout and dtype."""

    family: str
    options: tuple[tuple[str, str | int], ...]
    trainable: tuple[tuple[str, bool], ...]
    scope: str  # per_layer | per_channel (shared is per_layer with the Parameters reused)
    layout: str
    dtype: str
    shape: tuple[int, ...]
    bwd: str = "v1"  # the backward kernel: v1 | v2

    @property
    def id(self) -> str:
        """Test id, e.g. module-pau-form=A-per_channel-channels_last-fp32 (-bwd_v2 for v2)."""
        opts = ",".join(f"{k}={v}" for k, v in self.options + self.trainable)
        name = f"{self.family}-{opts}" if opts else self.family
        return f"module-{name}-{self.scope}-{self.layout}-{self.dtype}{_bwd_suffix(self.bwd)}"


def module_cases(matrix: str) -> list[ModuleCase]:
    """Every covered module config at both scopes and three layouts (fp32), bf16 on one;
    backward v2 the same under the interpreter, fp32 only on CUDA."""
    shapes = (
        INTERPRET_SHAPES
        if matrix == "interpret"
        else {
            "contiguous": (8, 24, 17, 19),
            "channels_last": (8, 24, 17, 19),
            "2d": (300, 130),
        }
    )
    out = []
    for family, options, trainable in MODULE_CONFIGS:
        for scope in ("per_layer", "per_channel"):
            for layout in ("contiguous", "channels_last", "2d"):
                dts = ("fp32", "bf16") if layout == "channels_last" else ("fp32",)
                for bwd in kernels.BWD_VARIANTS:
                    out += [
                        ModuleCase(
                            family, options, trainable, scope, layout, dt, shapes[layout], bwd
                        )
                        for dt in (dts if bwd == "v1" or matrix == "interpret" else ("fp32",))
                    ]
    return out


def run_module_case(case: ModuleCase, device: str, seed: int) -> dict[str, Any]:
    """Errors of one module's fused forward/backward vs its float64 reference path."""
    from search_space.build import build_activation

    torch.manual_seed(seed)
    config = {
        "family": case.family,
        "options": dict(case.options),
        "trainable": dict(case.trainable),
        "scope": case.scope,
    }
    channels = case.shape[1]
    fused: Any = build_activation(config, channels).to(device)
    with torch.no_grad():  # distinct values per channel, so channel indexing is exercised
        for p in fused.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference: Any = build_activation(config, channels).to(device)
    reference.load_state_dict(fused.state_dict())
    reference.allow_fused = False
    gen = torch.Generator().manual_seed(seed)
    x = make_input(
        Case(Config(case.family), case.scope, case.layout, case.dtype, case.shape), gen, device
    )
    dy = torch.randn(case.shape, generator=gen).to(device=device, dtype=x.dtype)
    if case.family in ("pau", "opau"):
        kinks = kink_mask(_module_config(fused), x.detach().double(), _module_values(fused))
        dy = dy.masked_fill(kinks, 0.0)
    if fused.fused_stored_kernel(x) is None:
        return {"id": case.id, "ok": False, "error": "the fused kernel does not cover this module"}

    def step(module: Any, xin: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
        xi = xin.detach().clone().requires_grad_()
        y = module(xi)
        wrt = [xi, *module.parameters()]
        return [y, *torch.autograd.grad(y, wrt, grad)]

    want = step(reference.double(), x.double(), dy.double())
    with kernels.backward_variant(case.bwd):
        got = step(fused, x, dy)
    torch_path = step(reference.float(), x, dy)
    names = ["y", "dx", *(f"d{n}" for n, _ in fused.named_parameters())]
    errors = {n: _rel(g, w) for n, g, w in zip(names, got, want, strict=True)}
    torch_errors = {n: _rel(g, w) for n, g, w in zip(names, torch_path, want, strict=True)}
    tol = TOLERANCE[x.dtype]
    within = [
        e < tol or (e <= CONDITION_FACTOR * torch_errors[k] and e < HARD_CAP)
        for k, e in errors.items()
    ]
    layout_kept = got[0].stride() == x.stride() and got[1].stride() == x.stride()
    return {
        "id": case.id,
        "errors": errors,
        "torch_errors": torch_errors,
        "tolerance": tol,
        "layout_kept": layout_kept,
        "ok": layout_kept and all(within),
    }


@dataclass(frozen=True)
class CompileCase:
    """A module compiled with torch.compile(backend="eager", fullgraph=True) vs run eagerly."""

    module: ModuleCase

    @property
    def id(self) -> str:
        """Test id, e.g. compile-smu-per_channel-channels_last-fp32."""
        return "compile-" + self.module.id.removeprefix("module-")


def compile_cases(matrix: str) -> list[CompileCase]:
    """One scalar and one coefficient family at each scope (channels_last fp32), each backward."""
    shape = INTERPRET_SHAPES["channels_last"] if matrix == "interpret" else (8, 24, 17, 19)
    picks = [("smu", "per_channel"), ("swish", "per_layer"), ("pau", "per_channel")]
    picks += [("opau", "per_layer")]
    out = []
    for bwd in kernels.BWD_VARIANTS:
        for family, scope in picks:
            options, trainable = next((o, t) for f, o, t in MODULE_CONFIGS if f == family)
            module = ModuleCase(
                family, options, trainable, scope, "channels_last", "fp32", shape, bwd
            )
            out.append(CompileCase(module))
    return out


def run_compile_case(case: CompileCase, device: str, seed: int) -> dict[str, Any]:
    """Dynamo captures the module whole (the registered ops) and matches eager bit for bit.

    backend="eager" runs Dynamo's capture and the registered `actsearch::fused_act_*` ops, which
    is what works under TRITON_INTERPRET=1 (interpreted kernels cannot be traced by
    AOTAutograd/Inductor; the GPU test compiles with Inductor).
    """
    if not (hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")):
        return {"id": case.id, "ok": True, "skipped": "torch.library.triton_op needs torch >= 2.6"}
    from search_space.build import build_activation

    mc = case.module
    torch.manual_seed(seed)
    config = {"family": mc.family, "options": dict(mc.options), "scope": mc.scope}
    module: Any = build_activation(config, mc.shape[1]).to(device)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(seed)
    x = make_input(Case(Config(mc.family), mc.scope, mc.layout, mc.dtype, mc.shape), gen, device)
    dy = torch.randn(mc.shape, generator=gen).to(device=device, dtype=x.dtype)
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    runs = []
    with kernels.backward_variant(mc.bwd):
        for f in (module, compiled):
            xi = x.detach().clone().requires_grad_()
            y = f(xi)
            runs.append([y, *torch.autograd.grad(y, [xi, *module.parameters()], dy)])
    names = ["y", "dx", *(f"d{n}" for n, _ in module.named_parameters())]
    equal = {n: bool(torch.equal(a, b)) for n, a, b in zip(names, runs[1], runs[0], strict=True)}
    return {"id": case.id, "equal": equal, "ok": all(equal.values())}


def _module_config(module: Any) -> Config:
    opts = module.options
    if module.family == "pau":
        return Config("pau", str(opts["form"]), int(opts["m"]), int(opts["n"]))
    return Config("opau", str(opts["basis"]), int(opts["k"]), int(opts["l"]))


def _module_values(module: Any) -> dict[str, torch.Tensor]:
    """Constrained coefficients in the functional API's shapes ((K,) or (C, K)), float64."""
    out = {}
    for name in module.kernel_param_names():
        v = module.value(name).detach().double()
        out[name] = v.t() if v.dim() == 2 else v
    return out


def main(argv: list[str] | None = None) -> int:
    """Run a case matrix and print one JSON line per case (or a summary)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", choices=("interpret", "cuda"), default="interpret")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    parser.add_argument("--only", default="", help="run the cases whose id contains this")
    args = parser.parse_args(argv)
    todo: list[Case | ModuleCase | CompileCase] = [
        c for c in cases(args.matrix) if args.only in c.id
    ]
    todo += [c for c in module_cases(args.matrix) if args.only in c.id]
    todo += [c for c in compile_cases(args.matrix) if args.only in c.id]
    start = time.perf_counter()
    settings = INTERPRET_BWD2 if args.matrix == "interpret" else {}
    with kernel_settings(**settings):
        failed = _run_all(todo, args.device, args.seed, args.json)
    summary = {"cases": len(todo), "failed": failed, "seconds": time.perf_counter() - start}
    print(json.dumps({"summary": summary}) if args.json else summary, flush=True)
    return 1 if failed else 0


def _run_all(
    todo: list[Case | ModuleCase | CompileCase], device: str, seed: int, as_json: bool
) -> int:
    """Run the cases, print each result (JSON) or each failure; the number that failed."""
    failed = 0
    for i, case in enumerate(todo):
        try:
            if isinstance(case, CompileCase):
                result = run_compile_case(case, device, seed + i)
            elif isinstance(case, ModuleCase):
                result = run_module_case(case, device, seed + i)
            else:
                result = run_case(case, device, seed + i)
        except Exception as exc:  # report the case, keep checking the others
            result = {"id": case.id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        failed += not result["ok"]
        if as_json:
            print(json.dumps(result), flush=True)
        elif not result["ok"]:
            print("FAIL", json.dumps(result), flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
