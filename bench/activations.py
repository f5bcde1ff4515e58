"""Forward+backward time of one activation on a (512, 64, 32, 32) bf16 tensor.

For ReLU, each learnable family's PyTorch reference path (eager, the modules' fp32-wrapped
functions) and the fused Triton kernels, against the five-tensor traffic floor (read x, write
y; read x and dy, write dx) at the copy bandwidth measured in the same run. Each fused kernel is
checked against the float64 reference on the same tensor before it is timed. Both backward
kernels are timed in the same run: v1 (one tile per program, a block reduction per parameter
per tile; the default) and v2 (persistent programs with register accumulators; "bwd2", "G2"
columns), each checked first. A small sweep of tile sizes / warps (v1) and tiles / warps /
programs per SM / in-thread fold (v2) is timed too (kernels only), to choose the defaults in
search_space/kernels/_plan.py.

Needs a CUDA GPU. Usage: python bench/activations.py [--quick] [--sweep all|v1|v2|none]
Writes bench/results/activations-<gpu>-<date>.json (and a copy under $OUT when set).

`--host-ops` runs on the CPU under Triton's interpreter instead: it counts the aten ops that one
fused forward and one backward dispatch besides the Triton launch (the host cost that makes small
layers launch-bound on the GPU), for ReLU, every module scope and the functional API, and writes
bench/results/activations-host-ops-cpu-vm-<time>.json.

`--ptxas [sm_90]` needs no GPU either: it compiles both backward kernels for every family on the
bench tensor (per layer, per channel contiguous, per channel channels_last) as the plans launch
them, and prints registers and spills from Triton's bundled `ptxas -v`, and v2's programs per
SM and partial buffer (H100 limits): a static check of register pressure when tiles change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine_info import cpu_model  # noqa: E402
from search_space import kernels  # noqa: E402
from search_space.kernels import _launch, _plan, reference  # noqa: E402
from search_space.kernels._ids import (  # noqa: E402
    FAMILY_IDS,
    OPAU_BASES,
    PAU_FORMS,
    SCALAR_WIDTHS,
    Op,
)
from tools.host_ops import HostOpCounter  # noqa: E402

SHAPE: tuple[int, ...] = (512, 64, 32, 32)
DTYPE = torch.bfloat16
DEVICE = "cuda"  # --dry-run: "cpu" under TRITON_INTERPRET=1, tiny shape, wall-clock timings


def bench_ms(fn: Callable[[], Any], quick: bool) -> float:
    """Median milliseconds of fn on the GPU (CUDA events, L2 flushed between runs)."""
    if DEVICE == "cpu":
        import time

        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    from triton.testing import do_bench

    return float(
        do_bench(fn, warmup=25 if quick else 100, rep=100 if quick else 400, return_mode="median")
    )


def graph_ms(fn: Callable[[], Any], quick: bool) -> float:
    """Median milliseconds of fn captured in a CUDA graph and replayed: GPU time alone."""
    if DEVICE == "cpu":
        return bench_ms(fn, quick)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    try:
        return bench_ms(graph.replay, quick)
    finally:
        del graph
        torch.cuda.empty_cache()


def cpu_issue_us(fn: Callable[[], Any], n: int = 50) -> float:
    """Host microseconds to issue one call (no synchronisation inside the loop)."""
    import time

    if DEVICE == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    elapsed = time.perf_counter() - start
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return elapsed / n * 1e6


def copy_bandwidth(quick: bool) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    n = 1 << 30 if DEVICE == "cuda" else 1 << 16  # 1 GiB each way
    src = torch.empty(n // 2, dtype=torch.bfloat16, device=DEVICE).normal_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), quick)
    return 2 * n / (ms * 1e-3)


# -- families ---------------------------------------------------------------------------------

FAMILIES: list[tuple[str, str, int, int]] = [
    ("smu", "smu", 0, 0),
    ("smu1", "smu1", 0, 0),
    ("swish", "", 0, 0),
    ("pau", "A", 5, 4),
    ("pau", "B", 5, 4),
    ("pau", "C", 5, 4),
    *[("opau", b, 5, 4) for b in kernels.OPAU_BASES],
    ("pau", "A", 8, 8),
    ("opau", "hermite_h", 8, 8),
]


def label(fam: tuple[str, str, int, int]) -> str:
    """Row label, e.g. pau-A(5,4)."""
    name, opt, m, n = fam
    if name in ("pau", "opau"):
        return f"{name}-{opt}({m},{n})"
    return name


def fused_params(fam: tuple[str, str, int, int], channels: int | None) -> dict[str, torch.Tensor]:
    """Parameters in the kernel API's shapes: shared (K,) / (1,), per-channel (C, K) / (C,)."""
    from tools.kernel_checks import Config, make_params

    gen = torch.Generator().manual_seed(0)
    cfg = Config(fam[0], fam[1], fam[2], fam[3])
    return {k: v.to(DEVICE) for k, v in make_params(cfg, channels, gen).items()}


def trainable(fam: tuple[str, str, int, int]) -> set[str]:
    """Parameters trained by default (SMU: alpha fixed, mu trained)."""
    return {"mu"} if fam[0] in ("smu", "smu1") else {"beta", "a", "b", "c", "d"}


def fused_call(fam: tuple[str, str, int, int]) -> Callable[..., torch.Tensor]:
    """The fused op as f(x, **params)."""
    name, opt = fam[0], fam[1]
    if name in ("smu", "smu1"):
        return lambda x, alpha, mu: kernels.smu(x, alpha, mu, name)
    if name == "swish":
        return lambda x, beta: kernels.swish(x, beta)
    if name == "pau":
        return lambda x, a, b: kernels.pau(x, a, b, opt)
    return lambda x, c, d: kernels.opau(x, c, d, opt)


def eager_call(fam: tuple[str, str, int, int]) -> tuple[Callable[..., torch.Tensor], str]:
    """The modules' reference path (fp32-wrapped functional), with broadcast-shaped params."""
    name, opt = fam[0], fam[1]
    try:
        from search_space.modules import functional as fn
    except ImportError:  # a checkout without the modules: the kernels' own reference
        return fused_like_reference(fam), "search_space.kernels.reference"
    if name in ("smu", "smu1", "swish"):
        return fn.in_fp32(getattr(fn, name)), "search_space.modules.functional"
    if name == "pau":
        return fn.in_fp32(fn.PAU_FORMS[opt]), "search_space.modules.functional"
    return fn.in_fp32(fn.opau_kernel(opt)), "search_space.modules.functional"


def fused_like_reference(fam: tuple[str, str, int, int]) -> Callable[..., torch.Tensor]:
    """search_space.kernels.reference as f(x, *params) (when the modules are absent)."""
    name, opt = fam[0], fam[1]
    if name in ("smu", "smu1"):
        return lambda x, a, m: reference.smu(x, a, m, name)
    if name == "swish":
        return reference.swish
    if name == "pau":
        return lambda x, a, b: reference.pau(x, a, b, opt)
    return lambda x, c, d: reference.opau(x, c, d, opt)


def to_module_shape(p: torch.Tensor, vector: bool) -> torch.Tensor:
    """Kernel-API shared params -> the modules' broadcast shapes (() or (K,))."""
    return p.reshape(()) if not vector else p


# -- measurements -----------------------------------------------------------------------------


def step_fn(
    f: Callable[..., torch.Tensor], x: torch.Tensor, params: list[torch.Tensor], dy: torch.Tensor
) -> Callable[[], Any]:
    """One forward + backward (gradients of x and the trainable params)."""
    wrt = [x, *[p for p in params if p.requires_grad]]

    def run() -> Any:
        y = f(x, *params)
        return torch.autograd.grad(y, wrt, dy)

    return run


def rel_errors(
    fam: tuple[str, str, int, int],
    x: torch.Tensor,
    params: dict[str, torch.Tensor],
    dy: torch.Tensor,
) -> dict[str, float]:
    """Fused vs float64 reference on the bench tensor: y, dx, each trained parameter."""
    names = [k for k in params if k in trainable(fam)]
    xr = x.detach().double().requires_grad_()
    pr = {k: v.detach().double().requires_grad_(k in names) for k, v in params.items()}
    yr = fused_like_reference(fam)(xr, *pr.values())
    gr = torch.autograd.grad(yr, [xr, *[pr[k] for k in names]], dy.double())
    xk = x.detach().clone().requires_grad_()
    pk = {k: v.detach().clone().requires_grad_(k in names) for k, v in params.items()}
    yk = fused_call(fam)(xk, *pk.values())
    gk = torch.autograd.grad(yk, [xk, *[pk[k] for k in names]], dy)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        a64 = a.detach().double()
        if not torch.isfinite(a64).all():
            return float("inf")
        return float((a64 - b).norm() / b.norm().clamp_min(1e-300))

    out = {"y": rel(yk, yr), "dx": rel(gk[0], gr[0])}
    out.update({f"d{k}": rel(g, w) for k, g, w in zip(names, gk[1:], gr[1:], strict=True)})
    del xr, yr, gr
    torch.cuda.empty_cache()
    return out


def kernel_only_us(
    fam: tuple[str, str, int, int],
    x: torch.Tensor,
    params: dict[str, torch.Tensor],
    dy: torch.Tensor,
    quick: bool,
) -> dict[str, Any]:
    """Microseconds of the Triton launches alone: forward, backward v1, backward v2, and how
    v2's grid was sized."""
    spec = spec_of(fam, params)
    channels = x.shape[1]
    table, per_channel = _launch.pack_params(kernel_params(params), spec, channels)
    out: dict[str, Any] = {
        "fwd_us": launches_ms(x, dy, table, per_channel, spec, quick, backward=False) * 1e3,
        "bwd_us": launches_ms(x, dy, table, per_channel, spec, quick, backward=True) * 1e3,
        "bwd2_us": launches_ms(x, dy, table, per_channel, spec, quick, True, "v2") * 1e3,
    }
    out["bwd2_grid"] = v2_grid(x, table, per_channel, spec)
    return out


def v2_grid(
    x: torch.Tensor, table: torch.Tensor, per_channel: bool, spec: _plan.OpSpec
) -> dict[str, Any]:
    """Backward v2's launch on x: grid, tiles, per-SM residency and the compiled kernel's use."""
    plan = _plan.make_plan(x, per_channel, spec, "v2")
    grid, extra = _plan.backward_grid(plan, x, table)
    kw = plan.bwd_kwargs[True, True]
    info: dict[str, Any] = {
        "grid": list(grid),
        "tiles": extra[0],
        "tile": [kw["BR"], kw["BX"]],
        "warps": kw["num_warps"],
        "fold": kw["FOLD"],
        "partial_MB": grid[0] * table.numel() * 4 / 1e6,
        "v1_partial_MB": plan.bwd_grid[0] * table.numel() * 4 / 1e6,
    }
    if DEVICE == "cuda":
        info.update(asdict(_plan.resident_programs(plan, x, table)))
    return info


def kernel_params(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The functional API's parameters as the table takes them ((C, K) coefficients as (K, C))."""
    return tuple(p.t() if p.dim() == 2 else p for p in params.values())


def launches_ms(
    x: torch.Tensor,
    dy: torch.Tensor,
    table: torch.Tensor,
    per_channel: bool,
    spec: _plan.OpSpec,
    quick: bool,
    backward: bool,
    variant: str = "v1",
) -> float:
    """Milliseconds of the forward or the backward (`variant` v1/v2) launch alone (x dense)."""
    plan = _plan.make_plan(x, per_channel, spec, variant)  # not cached: sweeps change the tiles
    if backward:
        return bench_ms(lambda: _launch.launch_backward(x, dy, table, plan, True, True), quick)
    return bench_ms(lambda: _launch.launch_forward(x, table, plan), quick)


def spec_of(fam: tuple[str, str, int, int], params: dict[str, torch.Tensor]) -> _plan.OpSpec:
    """The OpSpec the public function would build."""
    name, opt, m, n = fam
    op = FAMILY_IDS[name]
    if op in SCALAR_WIDTHS:
        return _plan.OpSpec(op, 0, 0, 0, SCALAR_WIDTHS[op], stacked=True)
    if op == Op.PAU:
        nb = params["b"].shape[-1]
        return _plan.OpSpec(op, PAU_FORMS[opt], m, n, (m + 1, nb))
    return _plan.OpSpec(op, OPAU_BASES[opt], m, n, (m + 1, n))


SWEEP_FWD = [(2048, 8), (4096, 8)]
SWEEP_BWD = [(512, 4), (1024, 2), (1024, 4), (1024, 8), (2048, 4), (2048, 8)]
SWEEP_FAMILIES = [("pau", "A", 5, 4), ("opau", "hermite_h", 5, 4)]
# backward v2: (tile, warps) at the default programs count and fold; programs per SM (0 = as
# many as are resident) at the default tile; the fold off; per layer and per channel
SWEEP2_TILES = [(256, 2), (256, 4), (512, 4), (512, 8), (1024, 8)]
SWEEP2_PROGRAMS = [1, 2, 4, 8]
SWEEP2_FAMILIES = [("pau", "A", 5, 4), ("opau", "hermite_h", 5, 4), ("opau", "hermite_h", 8, 8)]


def sweep(x: torch.Tensor, dy: torch.Tensor, quick: bool) -> list[dict[str, Any]]:
    """Kernel-only times for tile/warp variants (shared params, the given layout)."""
    rows = []
    saved = (
        _plan.FWD_TILE,
        _plan.FWD_WARPS,
        _plan.BWD_TILE,
        _plan.BWD_WARPS,
        _plan.BWD_TILE_HIGH_DEGREE,
    )
    try:
        for fam in SWEEP_FAMILIES:
            params = fused_params(fam, None)
            spec = spec_of(fam, params)
            table, per_channel = _launch.pack_params(kernel_params(params), spec, None)
            for tile, warps in SWEEP_FWD:
                _plan.FWD_TILE, _plan.FWD_WARPS = tile, warps
                ms = launches_ms(x, dy, table, per_channel, spec, quick, backward=False)
                rows.append(
                    {
                        "family": label(fam),
                        "pass": "fwd",
                        "tile": tile,
                        "warps": warps,
                        "us": ms * 1e3,
                    }
                )
            for tile, warps in SWEEP_BWD:
                _plan.BWD_TILE = _plan.BWD_TILE_HIGH_DEGREE = tile
                _plan.BWD_WARPS = warps
                ms = launches_ms(x, dy, table, per_channel, spec, quick, backward=True)
                rows.append(
                    {
                        "family": label(fam),
                        "pass": "bwd",
                        "tile": tile,
                        "warps": warps,
                        "us": ms * 1e3,
                    }
                )
    finally:
        (
            _plan.FWD_TILE,
            _plan.FWD_WARPS,
            _plan.BWD_TILE,
            _plan.BWD_WARPS,
            _plan.BWD_TILE_HIGH_DEGREE,
        ) = saved
    return rows


def sweep_v2(x: torch.Tensor, dy: torch.Tensor, quick: bool) -> list[dict[str, Any]]:
    """Backward v2 kernel-only times over tiles/warps, programs per SM and the fold."""
    from tools.kernel_checks import kernel_settings

    rows = []
    for fam in SWEEP2_FAMILIES:
        high = max(fam[2], fam[3]) >= 6
        tile_attr, warps_attr = (
            ("BWD2_TILE_HIGH_DEGREE", "BWD2_WARPS_HIGH_DEGREE")
            if high
            else ("BWD2_TILE", "BWD2_WARPS")
        )
        for scope, channels in (("per_layer", None), ("per_channel", SHAPE[1])):
            params = fused_params(fam, channels)
            spec = spec_of(fam, params)
            table, per_channel = _launch.pack_params(kernel_params(params), spec, x.shape[1])
            settings: list[dict[str, int]] = [
                {tile_attr: tile, warps_attr: warps} for tile, warps in SWEEP2_TILES
            ]
            settings += [{"BWD2_PROGRAMS_PER_SM": n} for n in SWEEP2_PROGRAMS]
            settings.append({"BWD2_FOLD": 1})
            for setting in settings:
                with kernel_settings(**setting):
                    ms = launches_ms(x, dy, table, per_channel, spec, quick, True, "v2")
                    grid = v2_grid(x, table, per_channel, spec)
                rows.append(
                    {
                        "family": label(fam),
                        "scope": scope,
                        "pass": "bwd2",
                        "setting": setting,
                        "us": ms * 1e3,
                        "grid": grid,
                    }
                )
    return rows


def measure(
    quick: bool,
    families: list[tuple[str, str, int, int]],
    on_rows: Callable[[dict[str, Any]], None],
    sweeps: str = "all",
) -> dict[str, Any]:
    """All rows of the table, plus the sweep."""
    torch.manual_seed(0)
    bw = copy_bandwidth(quick)
    numel = 1
    for s in SHAPE:
        numel *= s
    floor_us = 5 * numel * torch.finfo(DTYPE).bits / 8 / bw * 1e6
    x_cl = torch.randn(SHAPE, device=DEVICE, dtype=DTYPE).contiguous(
        memory_format=torch.channels_last
    )
    x_cont = x_cl.contiguous()
    dy_cl = torch.randn_like(x_cl)
    dy_cont = dy_cl.contiguous()
    rows: list[dict[str, Any]] = []

    def add(family: str, path: str, layout: str, scope: str, ms: float, **extra: Any) -> None:
        rows.append(
            {
                "family": family,
                "path": path,
                "layout": layout,
                "scope": scope,
                "us": ms * 1e3,
                "x_floor": ms * 1e3 / floor_us,
                **extra,
            }
        )

    xg = x_cl.detach().requires_grad_()
    relu_step = step_fn(lambda x: torch.relu(x), xg, [], dy_cl)
    add(
        "relu",
        "eager",
        "channels_last",
        "-",
        bench_ms(relu_step, quick),
        graph_us=graph_ms(relu_step, quick) * 1e3,
        cpu_us=cpu_issue_us(relu_step),
    )
    source = ""
    for fam in families:
        name = label(fam)
        train = trainable(fam)
        shared = fused_params(fam, None)
        eager_fn, source = eager_call(fam)
        vec = fam[0] in ("pau", "opau")
        eparams = [
            to_module_shape(v, vec).clone().requires_grad_(k in train) for k, v in shared.items()
        ]
        try:
            estep = step_fn(eager_fn, xg, eparams, dy_cl)
            add(
                name,
                "eager",
                "channels_last",
                "per_layer",
                bench_ms(estep, quick),
                graph_us=graph_ms(estep, quick) * 1e3,
                cpu_us=cpu_issue_us(estep, 10),
            )
        except torch.OutOfMemoryError:
            add(name, "eager", "channels_last", "per_layer", float("nan"), note="OOM")
        errs = rel_errors(fam, x_cl, shared, dy_cl)
        for layout, x, dy in (("channels_last", x_cl, dy_cl), ("contiguous", x_cont, dy_cont)):
            for scope, params in (
                ("per_layer", shared),
                ("per_channel", fused_params(fam, SHAPE[1])),
            ):
                fparams = [v.clone().requires_grad_(k in train) for k, v in params.items()]
                xx = x.detach().requires_grad_()
                fstep = step_fn(fused_call(fam), xx, fparams, dy)
                ms = bench_ms(fstep, quick)
                extra: dict[str, Any] = kernel_only_us(fam, x, params, dy, quick)
                extra["kernels_us"] = extra["fwd_us"] + extra["bwd_us"]
                extra["kernels2_us"] = extra["fwd_us"] + extra["bwd2_us"]
                if layout == "channels_last":
                    extra["graph_us"] = graph_ms(fstep, quick) * 1e3
                    extra["cpu_us"] = cpu_issue_us(fstep)
                    # the same step with backward v2, checked on this tensor before it is timed
                    with kernels.backward_variant("v2"):
                        extra["rel_err_v2"] = rel_errors(fam, x, params, dy)
                        extra["graph2_us"] = graph_ms(fstep, quick) * 1e3
                if layout == "channels_last" and scope == "per_layer":
                    extra["rel_err"] = errs
                add(name, "fused", layout, scope, ms, **extra)
    result = {
        "copy_GBps": bw / 1e9,
        "floor_us": floor_us,
        "rows": rows,
        "eager_source": source,
        "sweep": [],
    }
    on_rows(result)  # saved before the sweeps, in case the run is cut short
    if sweeps in ("all", "v2"):
        result["sweep_v2"] = sweep_v2(x_cl, dy_cl, quick)
        on_rows(result)
    if sweeps in ("all", "v1"):
        result["sweep"] = sweep(x_cl, dy_cl, quick)
    return result


def table(result: dict[str, Any]) -> str:
    """The short table printed last (channels_last input, per-layer parameters)."""
    rows = result["rows"]
    floor = result["floor_us"]
    nan = float("nan")

    def pick(
        fam: str, path: str, layout: str = "channels_last", scope: str = "per_layer"
    ) -> dict[str, Any]:
        for r in rows:
            if (r["family"], r["path"], r["layout"]) == (fam, path, layout) and (
                r["scope"] == scope or path == "eager"
            ):
                return r
        return {}

    lines = [
        f"{result['gpu']}  torch {result['torch']}  triton {result['triton']}  "
        f"copy {result['copy_GBps']:.0f} GB/s  floor {floor:.1f} us  "
        f"(5 x {tuple(result['shape'])} bf16)",
        f"{'family':21s} {'eager':>7s} {'eagerG':>7s} {'fused':>7s} {'fusedG':>7s} "
        f"{'kern':>6s} {'G/floor':>7s} {'cpu':>6s} {'perC G':>7s} {'NCHW':>6s} {'err':>8s} | "
        f"{'bwd':>6s} {'bwd2':>6s} {'G2':>7s} {'G2/fl':>6s} {'perC G2':>7s} {'pCbwd2':>7s} "
        f"{'err2':>8s}",
    ]
    relu = pick("relu", "eager")
    lines.append(
        f"{'relu':21s} {relu['us']:7.1f} {relu.get('graph_us', 0):7.1f} "
        f"{'':7s} {'':7s} {'':6s} {relu.get('graph_us', 0) / floor:7.2f} "
        f"{relu.get('cpu_us', 0):6.0f}"
    )
    fams = [r["family"] for r in rows if r["path"] == "eager" and r["family"] != "relu"]
    for fam in fams:
        e, f = pick(fam, "eager"), pick(fam, "fused")
        pc = pick(fam, "fused", scope="per_channel")
        nchw = pick(fam, "fused", layout="contiguous")
        err = max(f.get("rel_err", {"-": nan}).values())
        err2 = max([*f.get("rel_err_v2", {"-": nan}).values(), *pc.get("rel_err_v2", {}).values()])
        lines.append(
            f"{fam:21s} {e.get('us', nan):7.1f} {e.get('graph_us', nan):7.1f} "
            f"{f['us']:7.1f} {f.get('graph_us', nan):7.1f} {f['kernels_us']:6.1f} "
            f"{f.get('graph_us', nan) / floor:7.2f} {f.get('cpu_us', nan):6.0f} "
            f"{pc.get('graph_us', nan):7.1f} {nchw.get('us', nan):6.1f} "
            f"{err:8.1e} | {f.get('bwd_us', nan):6.1f} {f.get('bwd2_us', nan):6.1f} "
            f"{f.get('graph2_us', nan):7.1f} {f.get('graph2_us', nan) / floor:6.2f} "
            f"{pc.get('graph2_us', nan):7.1f} {pc.get('bwd2_us', nan):7.1f} {err2:8.1e}"
        )
    lines.append(
        "us, median fwd+bwd. eager/fused: timed as issued from Python; G: CUDA-graph "
        "replay (GPU time); kern: the two Triton launches; cpu: host us to issue one "
        "step; perC: per-channel params; NCHW: contiguous input; err: max rel err vs "
        "float64. Right of |: backward v1 vs v2 (bwd, bwd2: the backward launch alone; "
        "G2: the fused step's graph replay with v2; pCbwd2: per-channel bwd2; err2: v2's max "
        "rel err, per layer and per channel)"
    )
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in result.get("sweep", []):
        key = (r["family"], r["pass"])
        if key not in best or r["us"] < best[key]["us"]:
            best[key] = r
    if best:
        lines.append(
            "sweep best: "
            + "; ".join(
                f"{f} {p} tile {r['tile']}/{r['warps']}w {r['us']:.1f}us"
                for (f, p), r in best.items()
            )
        )
    best2: dict[tuple[str, str], dict[str, Any]] = {}
    for r in result.get("sweep_v2", []):
        key = (r["family"], r["scope"])
        if key not in best2 or r["us"] < best2[key]["us"]:
            best2[key] = r
    if best2:
        lines.append(
            "sweep v2 best: "
            + "; ".join(
                f"{f} {s} {r['setting']} {r['us']:.1f}us (grid {r['grid']['grid']})"
                for (f, s), r in best2.items()
            )
        )
    return "\n".join(lines)


# -- host-side work per fused call (CPU, Triton interpreter) ---------------------------------

# Every family of the timing table, but two OPAU bases stand for all six and none for (8, 8)
# OPAU: the host's work depends on the parameter count and scope, not on the basis.
HOST_FAMILIES: list[tuple[str, str, int, int]] = [
    f for f in FAMILIES if f[0] != "opau" or f[1:] in (("hermite_h", 5, 4), ("laguerre", 5, 4))
]
HOST_SCOPES = ("shared", "per_layer", "per_channel")
HOST_SHAPE = (2, 4, 3, 3)  # tiny: the count does not depend on the size


def host_module(fam: tuple[str, str, int, int], scope: str, channels: int) -> torch.nn.Module:
    """The activation module a model builder would get (second site for scope `shared`)."""
    from search_space.build import ActivationFactory

    name, opt, m, n = fam
    options: dict[str, str | int] = {}
    if name == "pau":
        options = {"form": opt, "m": m, "n": n}
    elif name == "opau":
        options = {"basis": opt, "k": m, "l": n}
    factory = ActivationFactory({"family": name, "options": options, "scope": scope})
    factory(channels)
    return factory(channels)


def host_ops_rows(timing_reps: int) -> list[dict[str, Any]]:
    """Aten ops per forward and per backward for ReLU, each module scope and the functional API."""
    import statistics
    import time

    rows: list[dict[str, Any]] = []
    x0 = torch.randn(HOST_SHAPE, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x0)
    channels = HOST_SHAPE[1]

    def measure_path(
        name: str, scope: str, path: str, f: Callable[..., Any], params: list[torch.Tensor]
    ) -> None:
        x = x0.detach().clone().requires_grad_()
        wrt = [x, *[p for p in params if p.requires_grad]]
        counter = HostOpCounter()
        with counter:
            for _ in range(2):  # warm-up: first calls import and fill caches
                torch.autograd.grad(f(x), wrt, dy)
            y, fwd_ops, fwd_launch = counter.count(lambda: f(x))
            _g, bwd_ops, bwd_launch = counter.count(lambda: torch.autograd.grad(y, wrt, dy))
        stub = HostOpCounter(stub_launches=True)
        times = []
        with stub:
            for _ in range(timing_reps):
                start = time.perf_counter()
                torch.autograd.grad(f(x), wrt, dy)
                times.append(time.perf_counter() - start)
        rows.append(
            {
                "family": name,
                "scope": scope,
                "path": path,
                "fwd_ops": len(fwd_ops),
                "bwd_ops": len(bwd_ops),
                "fwd_launches": fwd_launch,
                "bwd_launches": bwd_launch,
                "fwd_op_names": fwd_ops,
                "bwd_op_names": bwd_ops,
                "host_us_median": statistics.median(times) * 1e6,
            }
        )

    measure_path("relu", "-", "module", torch.nn.ReLU(), [])
    for fam in HOST_FAMILIES:
        name = label(fam)
        for scope in HOST_SCOPES:
            module = host_module(fam, scope, channels)
            measure_path(name, scope, "module", module, list(module.parameters()))
        train = trainable(fam)
        for scope, chans in (("shared", None), ("per_channel", channels)):
            params = [
                v.clone().requires_grad_(k in train) for k, v in fused_params(fam, chans).items()
            ]
            call = fused_call(fam)
            measure_path(name, scope, "functional", lambda x, c=call, p=params: c(x, *p), params)
    return rows


def host_ops_table(rows: list[dict[str, Any]], machine: str) -> str:
    """The short table printed last by --host-ops."""
    lines = [
        f"aten ops per call, Triton launch excluded ({machine}; a CPU count, not a GPU time)",
        f"{'family':18s} {'scope':12s} {'path':10s} {'fwd':>4s} {'bwd':>4s} {'launch':>6s} "
        f"{'host us':>8s}",
    ]
    for r in rows:
        lines.append(
            f"{r['family']:18s} {r['scope']:12s} {r['path']:10s} {r['fwd_ops']:4d} "
            f"{r['bwd_ops']:4d} {r['fwd_launches'] + r['bwd_launches']:6d} "
            f"{r['host_us_median']:8.0f}"
        )
    lines.append(
        "fwd: module(x) or kernels.<family>(x, *params); bwd: torch.autograd.grad(y, [x, *params], "
        "dy). host us: one fwd+bwd on this CPU with the Triton launches stubbed out (median); "
        "proxies for GPU host time, not measurements of it"
    )
    return "\n".join(lines)


def cpu_machine() -> str:
    """A name for this CPU machine: model and core count."""
    return f"cpu {cpu_model()}, {os.cpu_count()} cores (shared VM)"


# -- registers without a GPU (Triton compiles for a target without a device) -------------------


def ptxas_rows(arch: str) -> list[dict[str, Any]]:
    """Registers/spills of both backward kernels per family and mode on the bench tensor."""
    import re
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from search_space.kernels import _triton

    capability = int(arch.removeprefix("sm_").rstrip("a"))
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    x_cont = torch.empty(SHAPE, dtype=DTYPE, device="meta")
    x_cl = x_cont.contiguous(memory_format=torch.channels_last)
    modes = [("per_layer", x_cl, False), ("per_channel NCHW", x_cont, True)]
    modes.append(("per_channel channels_last", x_cl, True))
    rows = []
    for fam in FAMILIES:
        for mode, x, per_channel in modes:
            params = fused_params(fam, SHAPE[1] if per_channel else None)
            spec = spec_of(fam, params)
            p_count = spec.n_params * (SHAPE[1] if per_channel else 1)
            row: dict[str, Any] = {"family": label(fam), "mode": mode}
            for variant in _plan.BWD_VARIANTS:
                plan = _plan.make_plan(x, per_channel, spec, variant)
                kernel = getattr(_triton, plan.bwd_kernel)
                kwargs = dict(plan.bwd_kwargs[True, True])
                warps = kwargs.pop("num_warps")
                ints = {"R": plan.layout.R, "C": plan.layout.C, "INNER": plan.layout.I}
                ints["TILES"] = plan.bwd_grid[0]
                sig, consts, attrs = {}, {}, {}
                for i, arg in enumerate(kernel.arg_names):
                    if arg.endswith("_ptr"):
                        sig[arg] = "*fp32" if arg in ("p_ptr", "part_ptr") else "*bf16"
                        attrs[(i,)] = [["tt.divisibility", 16]]
                    elif arg in kwargs or ints.get(arg) == 1:  # Triton makes 1 a constant
                        sig[arg] = "constexpr"
                        consts[(i,)] = kwargs.get(arg, 1)
                    else:
                        sig[arg] = "i32"
                        if ints[arg] % 16 == 0:
                            attrs[(i,)] = [["tt.divisibility", 16]]
                src = ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs)
                compiled = triton.compile(
                    src,
                    target=GPUTarget("cuda", capability, 32),
                    options={"num_warps": warps},
                )
                with tempfile.TemporaryDirectory() as tmp:
                    ptx = Path(tmp) / "k.ptx"
                    ptx.write_text(compiled.asm["ptx"])
                    proc = subprocess.run(
                        [str(ptxas), "-v", f"--gpu-name={arch}", str(ptx), "-o", f"{tmp}/k.o"],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                regs = int(re.search(r"Used (\d+) registers", proc.stderr).group(1))  # type: ignore[union-attr]
                spills = int(re.search(r"(\d+) bytes spill stores", proc.stderr).group(1))  # type: ignore[union-attr]
                row[variant] = {"regs": regs, "spill_bytes": spills, "warps": warps}
                if variant == "v2":
                    shared = int(compiled.metadata.shared)
                    per_sm = _plan.programs_per_sm(regs, shared, warps)
                    tiles, axis1 = plan.bwd_grid
                    programs = max(1, min(tiles, 132 * per_sm // axis1))
                    row[variant].update(
                        per_sm=per_sm,
                        grid=[programs, axis1],
                        partial_MB=programs * p_count * 4 / 1e6,
                        fold=kwargs["FOLD"],
                    )
                else:
                    row[variant]["partial_MB"] = plan.bwd_grid[0] * p_count * 4 / 1e6
            rows.append(row)
            print(ptxas_line(row), flush=True)
    return rows


def ptxas_line(row: dict[str, Any]) -> str:
    """One printed line of --ptxas."""
    v1, v2 = row["v1"], row["v2"]
    return (
        f"{row['family']:21s} {row['mode']:26s} v1 {v1['regs']:3d} regs {v1['spill_bytes']:4d} B "
        f"spilled {v1['partial_MB']:7.2f} MB | v2 {v2['regs']:3d} regs {v2['spill_bytes']:4d} B "
        f"spilled, {v2['per_sm']:2d}/SM, grid {v2['grid']}, {v2['partial_MB']:5.2f} MB"
    )


def ptxas_main(arch: str) -> int:
    """--ptxas: static registers/spills of both backward kernels (no GPU needed)."""
    global DEVICE
    DEVICE = "cpu"  # parameters only give the specs their shapes
    rows = ptxas_rows(arch)
    print(
        f"{arch}, {tuple(SHAPE)} bf16; per SM / grid: v2 programs resident by registers and "
        "shared memory at H100 limits, 132 SMs; MB: the fp32 partial-sum buffer"
    )
    return 0 if rows else 1


def host_ops_main(reps: int) -> int:
    """--host-ops: count host-side aten ops per fused call on the CPU (Triton interpreter)."""
    global DEVICE
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        if "triton" in sys.modules:
            print(
                "--host-ops needs TRITON_INTERPRET=1 set before triton is imported", file=sys.stderr
            )
            return 2
        os.environ["TRITON_INTERPRET"] = "1"
    DEVICE = "cpu"
    import triton

    torch.manual_seed(0)
    rows = host_ops_rows(reps)
    machine = cpu_machine()
    result = {
        "what": "aten ops dispatched per fused forward / backward, Triton launch excluded",
        "machine": machine,
        "device": "cpu (Triton interpreter); counts are a host-cost proxy, not GPU timings",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "git": _git_head(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "shape": list(HOST_SHAPE),
        "dtype": "bfloat16, channels_last",
        "rows": rows,
    }
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "bench" / "results" / f"activations-host-ops-cpu-vm-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    if os.environ.get("OUT"):
        shutil.copy(out, Path(os.environ["OUT"]) / out.name)
    print(host_ops_table(rows, machine))
    return 0


def _git_head() -> str:
    import subprocess

    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return ""
    return proc.stdout.strip()


def main() -> int:
    """Measure, write JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--only", default="", help="families whose label contains this")
    parser.add_argument(
        "--sweep",
        choices=("all", "v1", "v2", "none"),
        default="all",
        help="tile sweeps to time after the table: backward v1's, v2's, both or none",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check this script on the CPU (needs TRITON_INTERPRET=1); no JSON",
    )
    parser.add_argument(
        "--host-ops",
        action="store_true",
        help="CPU: count aten ops per fused fwd/bwd (Triton interpreter), write JSON",
    )
    parser.add_argument("--reps", type=int, default=200, help="--host-ops timing repetitions")
    parser.add_argument(
        "--ptxas",
        nargs="?",
        const="sm_90a",
        default=None,
        help="no GPU: compile both backward kernels for this arch, print registers and spills",
    )
    args = parser.parse_args()
    if args.host_ops:
        return host_ops_main(args.reps)
    if args.ptxas:
        return ptxas_main(args.ptxas)
    global DEVICE, SHAPE
    if args.dry_run:
        DEVICE, SHAPE = "cpu", (2, 4, 4, 4)
    elif not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    fams = [f for f in FAMILIES if args.only in label(f)]
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu-dry-run"
    meta = {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "shape": list(SHAPE),
        "dtype": "bfloat16",
        "defaults": {
            k: getattr(_plan, k)
            for k in dir(_plan)
            if k.startswith(("FWD_", "BWD_", "BWD2_")) and k != "BWD_VARIANTS"
        },
    }
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    name = f"activations-{slug}-{dt.date.today().isoformat()}.json"

    def save(result: dict[str, Any]) -> None:
        result.update(meta)
        if args.dry_run:
            return
        out = ROOT / "bench" / "results" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        if os.environ.get("OUT"):
            shutil.copy(out, Path(os.environ["OUT"]) / name)

    result = measure(args.quick, fams, save, args.sweep)
    save(result)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
