"""Launching the fused kernels: the parameter table, the two launches, the gradient split.

One launch path for both callers: the eager autograd function (`_ops.FusedActivation`) and the
bodies of the torch.library ops that torch.compile captures (`_library`, `library=True`: the
kernels go through `torch.library.wrap_triton`, so Inductor sees them).

Host time per call matters as much as GPU time: a ResNet layer's fused step is a few hundred µs
of GPU work, so every torch op issued around the two launches shows in the step time. Per call:
forward = one op to pack the parameter table (none for a single fp32 parameter) + the output
allocation; backward = dx and partial-sum allocations, one reduction that yields the
parameter-major table, one split of it. The launch arguments come from the plan (`_plan`),
made once per input shape and strides.
"""

from __future__ import annotations

from typing import Any

import torch

from search_space.kernels._plan import (
    OpSpec,
    Plan,
    backward_grid,
    device_guard,
    interpreted,
    triton_module,
)


def pack_params(
    params: tuple[torch.Tensor, ...], spec: OpSpec, channels: int | None
) -> tuple[torch.Tensor, bool]:
    """The fp32 parameter-major table [P] or [P, C] (one torch op) and whether it is per channel.

    A parameter is shared when it holds `width` values and per channel when it holds
    `width * channels`; shared ones are broadcast (expand, a view) when another is per channel.
    """
    widths = spec.widths
    chan_shape: tuple[int, ...] | None = None
    for p, w in zip(params, widths, strict=True):
        n = p.numel()
        if n == w:
            continue
        if channels is not None and n == w * channels:
            chan_shape = tuple(p.shape) if spec.stacked else tuple(p.shape[1:])
            continue
        where = f"channels={channels}" if channels is not None else "an input with no channel dim"
        raise ValueError(
            f"parameter of shape {tuple(p.shape)} fits neither a shared set of {w} value(s) "
            f"nor one set per channel ({where}): pass shape ({w},) or (C, {w})"
        )
    pieces = params
    if chan_shape is not None:
        pieces = tuple(
            _broadcast(p, w, chan_shape, spec.stacked) for p, w in zip(params, widths, strict=True)
        )
    if len(pieces) == 1:
        table = pieces[0]
    elif spec.stacked:
        table = torch.stack(pieces)
    else:
        table = torch.cat(pieces)
    if table.dtype != torch.float32 or not table.is_contiguous():
        table = table.to(torch.float32).contiguous()
    return table, chan_shape is not None


def _broadcast(
    p: torch.Tensor, width: int, chan_shape: tuple[int, ...], stacked: bool
) -> torch.Tensor:
    """A shared parameter viewed as a per-channel one (per-channel ones unchanged)."""
    if p.numel() != width or (width == 0 and p.dim() > 1):
        return p
    if stacked:
        return p.expand(chan_shape)  # () or (1,) to the per-channel shape
    return p.reshape(width, *([1] * len(chan_shape))).expand(width, *chan_shape)


def unpack_grads(
    grad: torch.Tensor,
    shapes: tuple[torch.Size, ...],
    dtypes: tuple[torch.dtype, ...],
    spec: OpSpec,
    needs: tuple[bool, ...],
) -> list[torch.Tensor | None]:
    """Split the [P] / [P, C] gradient table into each parameter's own shape and dtype."""
    if len(shapes) == 1:  # the table was the parameter itself
        pieces: tuple[torch.Tensor, ...] = (grad,)
    elif spec.stacked:
        pieces = grad.unbind(0)
    else:
        pieces = grad.split(spec.widths)
    out: list[torch.Tensor | None] = []
    for g, shape, dtype, need in zip(pieces, shapes, dtypes, needs, strict=True):
        if not need:
            out.append(None)
            continue
        if g.shape != shape:
            if g.numel() != shape.numel():  # a shared parameter beside per-channel ones
                g = g.sum(dim=tuple(range(0 if spec.stacked else 1, g.dim())))
            g = g.reshape(shape)
        out.append(g if g.dtype == dtype else g.to(dtype))
    return out


def _run(
    kernel: Any, grid: tuple[int, int], library: bool, xd: torch.Tensor, *args: Any, **kw: Any
) -> None:
    """Launch kernel[grid](xd, *args, **kw): directly on xd's device, or through wrap_triton."""
    if not library:
        with device_guard(xd):
            kernel[grid](xd, *args, **kw)
    elif _launch_while_tracing(kernel, xd):
        torch.library.wrap_triton(kernel)[grid](xd, *args, **kw)


def _launch_while_tracing(kernel: Any, x: torch.Tensor) -> bool:
    """Whether a library op's body launches: always, except interpreted kernels on tracing tensors.

    Under TRITON_INTERPRET=1 the kernels are interpreter functions: wrap_triton passes them
    through unwrapped, so they run eagerly on real tensors but cannot be traced. Dynamo's shape
    propagation runs an op's body on fake tensors; an interpreted kernel cannot run on those,
    and the outputs' shapes do not depend on it, so it is skipped there (the compiled graph
    calls the op on real tensors, which runs it). AOTAutograd would inline the body into its
    graph, where a skipped kernel would be lost: that is refused instead.
    """
    if not interpreted(kernel):
        return True
    from torch._subclasses.fake_tensor import FakeTensor
    from torch._subclasses.functional_tensor import FunctionalTensor

    if isinstance(x, FunctionalTensor):
        raise RuntimeError(
            "the fused activation ops cannot be traced by AOTAutograd/Inductor under "
            "TRITON_INTERPRET=1 (interpreted kernels are not traceable); use "
            "torch.compile(backend='eager') there, or a GPU"
        )
    return not isinstance(x, FakeTensor)


def launch_forward(
    xd: torch.Tensor, table: torch.Tensor, plan: Plan, library: bool = False
) -> torch.Tensor:
    """y = f(x) with the input's dtype and memory layout (xd dense, as the plan says)."""
    y = torch.empty_like(xd)
    if xd.numel() == 0:
        return y
    layout = plan.layout
    kernel = triton_module().act_fwd_kernel
    _run(
        kernel,
        plan.fwd_grid,
        library,
        xd,
        y,
        table,
        layout.R,
        layout.C,
        layout.I,
        **plan.fwd_kwargs,
    )
    return y


def launch_backward(
    xd: torch.Tensor,
    dy: torch.Tensor,
    table: torch.Tensor,
    plan: Plan,
    need_dx: bool,
    need_dp: bool,
    library: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dx or None, gradient table shaped like `table` or None)."""
    if dy.dtype != xd.dtype or dy.stride() != xd.stride() or dy.shape != xd.shape:
        dy = torch.empty_like(xd).copy_(dy)
    dx = torch.empty_like(xd) if need_dx else None
    if xd.numel() == 0:
        return dx, (torch.zeros_like(table) if need_dp else None)
    layout = plan.layout
    grid, extra = backward_grid(plan, xd, table)
    # [programs along axis 0, P, C]: every slot is written, so no zero fill
    part = torch.empty((grid[0], *table.shape), device=xd.device, dtype=torch.float32)
    _run(
        getattr(triton_module(), plan.bwd_kernel),
        grid,
        library,
        xd,
        dy,
        dx if dx is not None else dy,
        table,
        part,
        layout.R,
        layout.C,
        layout.I,
        *extra,
        **plan.bwd_kwargs[need_dx, need_dp],
    )
    if not need_dp:
        return dx, None
    # fp32 partial sums in a fixed order: the result is deterministic
    return dx, part.sum(dim=0)
