"""The launch plan of the fused kernels: which kernel, its layout, grids and constexpr arguments.

Everything that depends only on the input's shape and strides and on the kernel choice
(`OpSpec`) is planned once per (shape, strides, spec, backward variant) and cached (`_PLANS`):
the launch side (`_launch`) then issues only the kernels and a few allocations per call.

Two backward kernels, chosen per plan (`BWD_VARIANT`, env `ACTSEARCH_FUSED_BWD`, or
`backward_variant(...)` around the calls): "v1" (`act_bwd_kernel`, the default) runs one tile
per program and reduces every parameter's gradient over the tile (one block-wide reduction per
parameter per tile; partial buffer [tiles, P, C]); "v2" (`act_bwd_loop_kernel`) runs a few
programs per SM, each looping over a strided range of tiles with register accumulators, and
reduces once per program (partial buffer [programs, P, C], programs in the hundreds). Both end
in the same fixed-order `sum` over the first dimension: deterministic, no atomics.

The tile and warp settings are module attributes so bench/activations.py can sweep them (call
`clear_plans()` after changing one). The kernels (`_triton`, which imports triton) are imported
only when a plan needs the compiled kernel.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

logger = logging.getLogger(__name__)


# Elements per program: forward tiles are larger (few live values per element); backward
# tiles smaller so degree-8 recurrences stay in registers.
# Module attributes so bench/activations.py can sweep them (call clear_plans() after changing
# one); the defaults are its best measured.
# Measured on an H100 (bench/results/activations-nvidia-h100-*.json, sweep): forward tiles
# barely matter (all within 5%); backward is bound by the per-parameter block reductions, so
# fewer warps and 8 elements per thread won (PAU-A (5,4): 166 us at 1024/4 warps vs 237 at 1024/8).
FWD_TILE = 2048
BWD_TILE = 1024
BWD_TILE_HIGH_DEGREE = 1024  # max(m, n) >= 6 (legendre (8,8): 472 us at 1024/4 vs 643 at 1024/8)
FWD_WARPS = 8
BWD_WARPS = 4
MAX_CHANNEL_BLOCK = 128

# Backward variants (see the module docstring); v1 stays the default until the GPU timing
# (bench/activations.py, "bwd v2" columns) decides.
BWD_VARIANTS = ("v1", "v2")
BWD_VARIANT = os.environ.get("ACTSEARCH_FUSED_BWD", "v1").strip().lower() or "v1"
# v2 tiles: elements per loop iteration and warps. Each parameter keeps an accumulator of
# (elements per thread / FOLD) registers across the loop, so v2 wants fewer elements per thread
# than v1's 8: 4 (512 / 4 warps) for degrees up to 5, 2 (256 / 4 warps) above, keep every
# family at 28-164 registers per thread without spills (ptxas for sm_90, not yet timed; see
# bench/results/activations-notes.md, "Backward v2").
BWD2_TILE = 512
BWD2_WARPS = 4
BWD2_TILE_HIGH_DEGREE = 256  # max(m, n) >= 6
BWD2_WARPS_HIGH_DEGREE = 4
# Programs per SM: 0 = as many as are resident at once (from the compiled kernel's registers
# and shared memory), so the grid is one full wave of persistent programs; > 0 fixes it.
BWD2_PROGRAMS_PER_SM = 0
BWD2_FALLBACK_PER_SM = 4  # when the compiled kernel cannot be inspected (tracing, errors)
# In-thread pre-sum of FOLD neighbours before accumulating (INNER mode): 0 = the elements each
# thread holds (tile / (32 * warps)), 1 = off.
BWD2_FOLD = 0
# Under Triton's interpreter (CPU tests): programs along axis 0 (per channel or channel block);
# few and odd, so the tests' small tensors give programs several, and uneven numbers of, tiles.
BWD2_INTERPRET_PROGRAMS = 3
_INT32_LIMIT = 2**31 - 1
_MAX_PLANS = 4096  # distinct (shape, strides, kernel) keys kept; a training run has a few dozen


@dataclass(frozen=True)
class OpSpec:
    """The static choice of kernel: family, option, degrees (M, N), parameters and their form.

    `stacked`: every parameter is one table row (SMU, Swish: shape () / (1,) shared, (C,) per
    channel) and the table is their torch.stack; otherwise each parameter is a block of `width`
    rows ((w,) shared, (w, C) per channel, parameter-major) and the table is their torch.cat.
    `positive`: bit j set when table row j holds log(value), mapped by exp(clamp(row, *bounds))
    inside the kernels (the modules' storage of positive parameters).
    """

    family: int
    opt: int
    m: int
    n: int
    widths: tuple[int, ...]
    stacked: bool = False
    positive: int = 0
    log_bounds: tuple[float, float] = (0.0, 0.0)
    n_params: int = field(init=False)

    def __post_init__(self) -> None:
        # plain ints (not the `_ids` enums): they become constexpr arguments and op arguments
        object.__setattr__(self, "family", int(self.family))
        object.__setattr__(self, "opt", int(self.opt))
        object.__setattr__(self, "n_params", sum(self.widths))


@dataclass(frozen=True)
class Layout:
    """The logical (R, C, I) view of a dense input; LAST when channels are innermost."""

    R: int
    C: int
    I: int  # noqa: E741
    last: bool


@dataclass(frozen=True)
class Plan:
    """Everything about one launch pair that depends only on shapes, strides and the spec.

    For backward v2 the programs along axis 0 depend on how many fit on an SM, known once the
    kernel is compiled: `bwd_grid` then holds (tiles, axis 1) and `loop_grid` the launch grid,
    filled on the first backward (the same grid for every later call: deterministic sums).
    """

    dense: bool  # x is read as it is (else x.contiguous() first)
    layout: Layout
    fwd_grid: tuple[int, int]
    fwd_kwargs: dict[str, Any]
    bwd_grid: tuple[int, int]
    bwd_kwargs: dict[tuple[bool, bool], dict[str, Any]]  # by (need_dx, need_dp)
    backward: str = "v1"
    loop_grid: list[tuple[int, int]] = field(default_factory=list, compare=False, repr=False)

    @property
    def bwd_kernel(self) -> str:
        """Name of the backward kernel in `_triton`."""
        return "act_bwd_loop_kernel" if self.backward == "v2" else "act_bwd_kernel"


@dataclass(frozen=True)
class Resident:
    """How many v2 backward programs fit on one SM, and what the compiled kernel uses."""

    per_sm: int
    regs: int = -1  # per thread; -1 when not known
    spills: int = -1
    shared: int = -1  # bytes per program
    source: str = "fallback"  # occupancy (from the compiled kernel) | fixed | fallback


_PLANS: dict[tuple[Any, ...], Plan] = {}
_RESIDENT: dict[tuple[Any, ...], Resident] = {}


def clear_plans() -> None:
    """Forget cached launch plans (after changing the tile/warp module attributes)."""
    _PLANS.clear()


def _check_variant(name: str) -> str:
    if name not in BWD_VARIANTS:
        raise ValueError(
            f"unknown fused backward {name!r} (ACTSEARCH_FUSED_BWD / backward_variant): "
            f"use one of {', '.join(BWD_VARIANTS)}"
        )
    return name


@contextlib.contextmanager
def backward_variant(name: str) -> Iterator[None]:
    """Within the block, fused backwards planned from here on use variant `name` ("v1"/"v2").

    Plans are cached per variant, so switching costs nothing after the first use. Not
    thread-safe (a module attribute): meant for benchmarks and tests.
    """
    global BWD_VARIANT
    saved = BWD_VARIANT
    BWD_VARIANT = _check_variant(name)
    try:
        yield
    finally:
        BWD_VARIANT = saved


def triton_module() -> ModuleType:
    """The kernels (`_triton`): imported on first use, since importing it imports triton."""
    from search_space.kernels import _triton

    return _triton


def _dense(x: torch.Tensor) -> bool:
    if x.is_contiguous():
        return True
    if x.ndim == 4:
        return x.is_contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.is_contiguous(memory_format=torch.channels_last_3d)
    return False


def _layout_of(shape: tuple[int, ...], contiguous: bool, numel: int, per_channel: bool) -> Layout:
    """The (R, C, I) view of a dense tensor (contiguous, else channels-last)."""
    if not per_channel:
        return Layout(1, 1, numel, False)
    c = shape[1]
    if contiguous:
        r = shape[0]
        inner = numel // max(r * c, 1)
        return Layout(r, c, inner, inner == 1)
    return Layout(numel // max(c, 1), c, 1, True)


def _blocks(layout: Layout, tile: int) -> tuple[int, int, tuple[int, int]]:
    """(BR, BX, grid) for a tile of about `tile` elements."""
    if layout.last:
        bx = min(_next_pow2(layout.C), MAX_CHANNEL_BLOCK)
        br = max(tile // bx, 1)
        return br, bx, (_cdiv(layout.R, br), _cdiv(layout.C, bx))
    bx = min(_next_pow2(layout.I), tile)
    br = min(max(tile // bx, 1), _next_pow2(layout.R))
    return br, bx, (_cdiv(layout.R, br) * _cdiv(layout.I, bx), layout.C)


def _next_pow2(v: int) -> int:
    return 1 << max(int(v) - 1, 0).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _warps(elements: int, most: int) -> int:
    return max(1, min(most, elements // 64))


def make_plan(
    x: torch.Tensor, per_channel: bool, spec: OpSpec, backward: str | None = None
) -> Plan:
    """Layout, grids and constexpr arguments of the forward and backward launches on x.

    `backward`: "v1" or "v2" (default: `BWD_VARIANT`).
    """
    backward = _check_variant(BWD_VARIANT if backward is None else backward)
    dense = _dense(x)
    contiguous = x.is_contiguous() or not dense
    numel = x.numel()
    layout = _layout_of(tuple(x.shape), contiguous, numel, per_channel)
    lo, hi = spec.log_bounds
    common = {
        "FAMILY": spec.family,
        "OPT": spec.opt,
        "M": spec.m,
        "N": spec.n,
        "K": max(spec.m, spec.n),
        "P": spec.n_params,
        "POS": spec.positive,
        "LO": float(lo),
        "HI": float(hi),
        "LAST": layout.last,
        "BIG": numel > _INT32_LIMIT,
    }
    br, bx, fwd_grid = _blocks(layout, FWD_TILE)
    fwd_kwargs = {**common, "BR": br, "BX": bx, "num_warps": _warps(br * bx, FWD_WARPS)}
    high = max(spec.m, spec.n) >= 6
    if backward == "v2":
        tile = BWD2_TILE_HIGH_DEGREE if high else BWD2_TILE
        most = BWD2_WARPS_HIGH_DEGREE if high else BWD2_WARPS
    else:
        tile = BWD_TILE_HIGH_DEGREE if high else BWD_TILE
        most = BWD_WARPS
    br, bx, bwd_grid = _blocks(layout, tile)
    warps = _warps(br * bx, most)
    base = {**common, "BR": br, "BX": bx, "num_warps": warps}
    if backward == "v2":
        base["FOLD"] = _fold(layout, br, bx, warps)
    bwd_kwargs = {
        (dx, dp): {**base, "NEED_DX": dx, "NEED_DP": dp}
        for dx in (False, True)
        for dp in (False, True)
    }
    return Plan(dense, layout, fwd_grid, fwd_kwargs, bwd_grid, bwd_kwargs, backward)


def _fold(layout: Layout, br: int, bx: int, warps: int) -> int:
    """v2's in-thread pre-sum width: a power of two dividing BX; 1 in LAST mode (a column is a
    channel there, so neighbours along BX must not be summed)."""
    if layout.last:
        return 1
    fold = BWD2_FOLD if BWD2_FOLD > 0 else max(1, br * bx // (32 * warps))
    return min(_next_pow2(fold), bx)


def plan_for(x: torch.Tensor, per_channel: bool, spec: OpSpec) -> Plan:
    """The cached plan for x's shape and strides (made on first use)."""
    key = (x.shape, x.stride(), per_channel, spec, BWD_VARIANT)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = make_plan(x, per_channel, spec)
    return plan


def backward_grid(
    plan: Plan, xd: torch.Tensor, table: torch.Tensor
) -> tuple[tuple[int, int], tuple[int, ...]]:
    """(grid, extra runtime arguments after INNER) of the plan's backward launch.

    v1: the plan's grid, no extra argument. v2: (programs along axis 0, axis 1), found on the
    first call and kept in the plan, and the tile count along axis 0 (the loop's bound). The
    programs in all are SMs x `resident_programs` (one full wave of persistent programs),
    at most one per tile.
    """
    if plan.backward != "v2":
        return plan.bwd_grid, ()
    tiles, axis1 = plan.bwd_grid
    if not plan.loop_grid:
        if interpreted(getattr(triton_module(), plan.bwd_kernel)):
            programs = BWD2_INTERPRET_PROGRAMS
        else:
            # all programs resident at once: no tail wave of long-running programs
            programs = _sm_count(xd) * resident_programs(plan, xd, table).per_sm // axis1
        plan.loop_grid.append((max(1, min(tiles, programs)), axis1))
    return plan.loop_grid[0], (tiles,)


def interpreted(kernel: Any) -> bool:
    """Whether the kernel is a Triton interpreter function (TRITON_INTERPRET=1 at import)."""
    from triton.runtime.jit import JITFunction

    return not isinstance(kernel, JITFunction)


def _sm_count(x: torch.Tensor) -> int:
    if x.is_cuda:
        return int(torch.cuda.get_device_properties(x.device).multi_processor_count)
    return 1


def resident_programs(plan: Plan, xd: torch.Tensor, table: torch.Tensor) -> Resident:
    """How many programs of the plan's v2 backward are resident on one SM at once.

    From the compiled kernel (compiled here if it is not yet: `warmup` with the launch's own
    argument types, so the launch reuses it): registers, shared memory and warps against the
    SM's limits, as Triton's fused-softmax tutorial sizes its persistent grid. Cached per
    kernel configuration; `BWD2_FALLBACK_PER_SM` when it cannot be found (fake tensors while
    torch.compile traces, an unexpected Triton API), since it only tunes speed.
    """
    if BWD2_PROGRAMS_PER_SM > 0:
        return Resident(BWD2_PROGRAMS_PER_SM, source="fixed")
    kwargs = plan.bwd_kwargs[True, True]
    key = (xd.device.type, xd.device.index, xd.dtype, tuple(sorted(kwargs.items())))
    found = _RESIDENT.get(key)
    if found is not None:
        return found
    if type(xd) is not torch.Tensor or not xd.is_cuda:
        return Resident(BWD2_FALLBACK_PER_SM)
    try:
        found = _occupancy(plan, xd, table, kwargs)
    except Exception:  # the count only tunes speed: never fail the op for it
        logger.warning(
            "could not size the v2 backward grid; %d programs per SM",
            BWD2_FALLBACK_PER_SM,
            exc_info=True,
        )
        found = Resident(BWD2_FALLBACK_PER_SM)
    _RESIDENT[key] = found
    return found


def _occupancy(
    plan: Plan, xd: torch.Tensor, table: torch.Tensor, kwargs: dict[str, Any]
) -> Resident:
    """Compile (or find) the v2 kernel for these arguments and size its occupancy."""
    kernel = getattr(triton_module(), plan.bwd_kernel)
    layout = plan.layout
    with device_guard(xd):
        compiled = kernel.warmup(
            xd, xd, xd, table, table, layout.R, layout.C, layout.I, plan.bwd_grid[0],
            grid=(1,), **kwargs,
        )  # fmt: skip
        compiled._init_handles()
    props = torch.cuda.get_device_properties(xd.device)
    regs = int(compiled.n_regs)
    shared = int(compiled.metadata.shared)
    per_sm = programs_per_sm(
        regs,
        shared,
        int(compiled.metadata.num_warps),
        warp_size=int(props.warp_size),
        # 64K on every NVIDIA GPU since Kepler; missing from some torch stubs
        regs_per_sm=int(getattr(props, "regs_per_multiprocessor", 65536)),
        threads_per_sm=int(props.max_threads_per_multi_processor),
        shared_per_sm=int(props.shared_memory_per_multiprocessor),
    )
    return Resident(per_sm, regs, int(compiled.n_spills), shared, "occupancy")


def programs_per_sm(
    regs: int,
    shared: int,
    warps: int,
    *,
    warp_size: int = 32,
    regs_per_sm: int = 65536,
    threads_per_sm: int = 2048,
    shared_per_sm: int = 233472,
    blocks_per_sm: int = 32,
) -> int:
    """Programs of `warps` warps using `regs` registers per thread and `shared` bytes that fit
    on one SM at once (defaults: an H100's limits). At least 1."""
    # registers are allocated per warp in units of 256; each block reserves 1 KB of shared memory
    per_warp = -(-max(regs, 1) * warp_size // 256) * 256
    limits = [
        regs_per_sm // (per_warp * warps),
        threads_per_sm // (warps * warp_size),
        blocks_per_sm,
    ]
    if shared:
        limits.append(shared_per_sm // (shared + 1024))
    return max(1, min(limits))


def device_guard(x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """Triton launches on the current device: switch only when x lives elsewhere."""
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()
