"""Autograd functions that launch the Triton kernels: layout, parameter packing, reduction."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

# Family ids, PAU forms and OPAU bases: the numbers the kernels' FAMILY/OPT arguments take
# (kept equal to the constants in `_triton.py`, which this module imports lazily).
FAMILY_IDS = {"smu": 0, "smu1": 1, "swish": 2, "pau": 3, "opau": 4}
PAU_FORMS = {"A": 0, "B": 1, "C": 2}
OPAU_BASES = {
    "chebyshev_t": 0,
    "chebyshev_u": 1,
    "hermite_h": 2,
    "hermite_he": 3,
    "laguerre": 4,
    "legendre": 5,
}
MAX_DEGREE = 8

# Elements per program: forward tiles are larger (few live values per element); backward
# tiles smaller so degree-8 recurrences stay in registers.
# Module attributes so bench/activations.py can sweep them; the defaults are its best measured.
# Measured on an H100 (bench/results/activations-nvidia-h100-*.json, sweep): forward tiles
# barely matter (all within 5%); backward is bound by the per-parameter block reductions, so
# fewer warps and 8 elements per thread won (PAU-A (5,4): 166 us at 1024/4 warps vs 237 at 1024/8).
FWD_TILE = 2048
BWD_TILE = 1024
BWD_TILE_HIGH_DEGREE = 1024  # max(m, n) >= 6 (legendre (8,8): 472 us at 1024/4 vs 643 at 1024/8)
FWD_WARPS = 8
BWD_WARPS = 4
MAX_CHANNEL_BLOCK = 128
_INT32_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class OpSpec:
    """The static choice of kernel: family, option, degrees (M, N) and parameter widths."""

    family: int
    opt: int
    m: int
    n: int
    widths: tuple[int, ...]

    @property
    def n_params(self) -> int:
        """Parameters per channel in the packed table."""
        return sum(self.widths)


@dataclass(frozen=True)
class Layout:
    """The logical (R, C, I) view of a dense input; LAST when channels are innermost."""

    R: int
    C: int
    I: int  # noqa: E741
    last: bool


def _triton_module() -> Any:
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


def plan_layout(x: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, Layout]:
    """The tensor the kernels read (x itself unless its layout is not dense) and its view."""
    if not _dense(x):
        x = x.contiguous()
    numel = x.numel()
    if not per_channel:
        return x, Layout(1, 1, numel, False)
    c = x.shape[1]
    if x.is_contiguous():
        r = x.shape[0]
        inner = numel // max(r * c, 1)
        return x, Layout(r, c, inner, inner == 1)
    return x, Layout(numel // max(c, 1), c, 1, True)


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


def _device_guard(x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """Triton launches on the current device: switch only when x lives elsewhere."""
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def pack_params(
    params: tuple[torch.Tensor, ...], widths: tuple[int, ...], channels: int | None
) -> tuple[torch.Tensor, bool]:
    """One fp32 table [P, 1 or C] of all parameters (parameter-major); per-channel if any is."""
    per_channel = any(_is_per_channel(p, w, channels) for p, w in zip(params, widths, strict=True))
    rows = channels if per_channel and channels is not None else 1
    cols = []
    for p, w in zip(params, widths, strict=True):
        if w == 0:
            continue
        q = p.detach().reshape(-1, w).t()  # [w, 1 or C]
        cols.append(q.expand(w, rows) if q.shape[1] != rows else q)
    table = torch.cat(cols, dim=0) if len(cols) > 1 else cols[0]
    if table.dtype != torch.float32 or not table.is_contiguous():
        table = table.to(torch.float32).contiguous()
    return table, per_channel


def _is_per_channel(p: torch.Tensor, width: int, channels: int | None) -> bool:
    if p.numel() == width:
        return False
    if channels is not None and p.numel() == channels * width:
        return True
    where = f"channels={channels}" if channels is not None else "an input with no channel dim"
    raise ValueError(
        f"parameter of shape {tuple(p.shape)} fits neither a shared set of {width} value(s) "
        f"nor one set per channel ({where}): pass shape ({width},) or (C, {width})"
    )


def unpack_grads(
    grad: torch.Tensor, params: tuple[torch.Tensor, ...], widths: tuple[int, ...]
) -> list[torch.Tensor]:
    """Split the [rows, P] gradient table back into each parameter's own shape and dtype."""
    if grad.shape[1] != sum(widths):
        raise AssertionError("gradient table does not match the parameter widths")
    out = []
    start = 0
    for p, w in zip(params, widths, strict=True):
        g = grad[:, start : start + w]
        start += w
        if w == 0:
            out.append(torch.zeros_like(p))
            continue
        if p.numel() == w and g.shape[0] != 1:
            g = g.sum(dim=0)
        g = g.reshape(p.shape)
        out.append(g if g.dtype == p.dtype else g.to(p.dtype))
    return out


def launch_forward(
    x: torch.Tensor, table: torch.Tensor, per_channel: bool, spec: OpSpec
) -> torch.Tensor:
    """y = f(x) with the input's dtype and memory layout."""
    xd, layout = plan_layout(x, per_channel)
    y = torch.empty_like(xd)
    if xd.numel() == 0:
        return y
    br, bx, grid = _blocks(layout, FWD_TILE)
    tri = _triton_module()
    with _device_guard(xd):
        tri.act_fwd_kernel[grid](
            xd,
            y,
            table,
            layout.R,
            layout.C,
            layout.I,
            FAMILY=spec.family,
            OPT=spec.opt,
            M=spec.m,
            N=spec.n,
            K=max(spec.m, spec.n),
            P=spec.n_params,
            LAST=layout.last,
            BR=br,
            BX=bx,
            BIG=xd.numel() > _INT32_LIMIT,
            num_warps=_warps(br * bx, FWD_WARPS),
        )
    return y


def launch_backward(
    x: torch.Tensor,
    dy: torch.Tensor,
    table: torch.Tensor,
    per_channel: bool,
    spec: OpSpec,
    need_dx: bool,
    need_dp: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dx or None, [1 or C, P] parameter-gradient table or None)."""
    xd, layout = plan_layout(x, per_channel)
    if dy.dtype != xd.dtype or dy.stride() != xd.stride() or dy.shape != xd.shape:
        dy = torch.empty_like(xd).copy_(dy)
    dx = torch.empty_like(xd) if need_dx else None
    p = spec.n_params
    if xd.numel() == 0:
        return dx, (torch.zeros_like(table).t() if need_dp else None)
    tile = BWD_TILE_HIGH_DEGREE if max(spec.m, spec.n) >= 6 else BWD_TILE
    br, bx, grid = _blocks(layout, tile)
    if layout.last:
        part = torch.empty((grid[0], p, layout.C), device=xd.device, dtype=torch.float32)
    else:
        part = torch.empty((layout.C, grid[0], p), device=xd.device, dtype=torch.float32)
    tri = _triton_module()
    with _device_guard(xd):
        tri.act_bwd_kernel[grid](
            xd,
            dy,
            dx if dx is not None else dy,
            table,
            part,
            layout.R,
            layout.C,
            layout.I,
            FAMILY=spec.family,
            OPT=spec.opt,
            M=spec.m,
            N=spec.n,
            K=max(spec.m, spec.n),
            P=p,
            LAST=layout.last,
            BR=br,
            BX=bx,
            BIG=xd.numel() > _INT32_LIMIT,
            NEED_DX=need_dx,
            NEED_DP=need_dp,
            num_warps=_warps(br * bx, BWD_WARPS),
        )
    if not need_dp:
        return dx, None
    # The partial sums are fp32, fixed in order: the result is deterministic.
    grad = part.sum(dim=0).t() if layout.last else part.sum(dim=1)
    return dx, grad


class FusedActivation(torch.autograd.Function):
    """Forward and backward of one activation family through the Triton kernels."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, spec: OpSpec, *params: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1] if x.ndim >= 2 else None
        table, per_channel = pack_params(params, spec.widths, channels)
        if table.device != x.device:
            raise ValueError(f"parameters are on {table.device} but the input is on {x.device}")
        y = launch_forward(x, table, per_channel, spec)
        ctx.save_for_backward(x, table, *params)
        ctx.spec = spec
        ctx.per_channel = per_channel
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, table, *params = ctx.saved_tensors
        need_dx = ctx.needs_input_grad[0]
        need_dp = any(ctx.needs_input_grad[2:])
        dx, grad = launch_backward(x, dy, table, ctx.per_channel, ctx.spec, need_dx, need_dp)
        if dx is not None and dx.shape != x.shape:
            dx = dx.reshape(x.shape)
        pgrads: list[torch.Tensor | None] = [None] * len(params)
        if grad is not None:
            pgrads = list(unpack_grads(grad, tuple(params), ctx.spec.widths))
            pgrads = [
                g if need else None
                for g, need in zip(pgrads, ctx.needs_input_grad[2:], strict=True)
            ]
        return (dx, None, *pgrads)
