"""The fused activation as `torch.library.triton_op`s, so torch.compile can capture it.

Imported only while torch.compile traces a fused call (`_ops.fused_apply`): importing it imports
triton and registers two ops, `actsearch::fused_act_fwd` and `actsearch::fused_act_bwd`, whose
bodies launch the same kernels through `torch.library.wrap_triton` (Inductor sees the kernels
and can place them in its graph, and in a CUDA graph with it). Eager calls keep
`_ops.FusedActivation`: a custom op's eager dispatch costs more host time than the autograd
function it would replace.

`OPS` is False on torch < 2.6 (no triton_op / wrap_triton); `_ops.fused_apply` then traces the
autograd function instead.
"""

from __future__ import annotations

from typing import Any

import torch
from triton.runtime.jit import JITFunction

from search_space.kernels import _triton
from search_space.kernels._ops import OpSpec, backward_grid, make_plan, pack_params
from search_space.kernels._triton import act_fwd_kernel

OPS = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")
# Under TRITON_INTERPRET=1 the kernels are interpreter functions: wrap_triton passes them through
# unwrapped, so they run eagerly on real tensors but cannot be traced (see _launch_now).
_INTERPRETED = not isinstance(act_fwd_kernel, JITFunction)


def _launch_now(x: torch.Tensor) -> bool:
    """Whether to launch here: always, except for interpreted kernels meeting tracing tensors.

    Dynamo's shape propagation runs an op's body on fake tensors; an interpreted kernel cannot
    run on those, and the outputs' shapes do not depend on it, so it is skipped there (the
    compiled graph calls the op on real tensors, which runs it). AOTAutograd would inline the
    body into its graph, where a skipped kernel would be lost: that is refused instead.
    """
    if not _INTERPRETED:
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


def _spec(
    family: int, opt: int, m: int, n: int, n_params: int, positive: int, lo: float, hi: float
) -> OpSpec:
    return OpSpec(family, opt, m, n, (n_params,), positive=positive, log_bounds=(lo, hi))


def _forward(
    x: torch.Tensor,
    table: torch.Tensor,
    per_channel: bool,
    family: int,
    opt: int,
    m: int,
    n: int,
    n_params: int,
    positive: int,
    lo: float,
    hi: float,
) -> torch.Tensor:
    """y = f(x) (the body of actsearch::fused_act_fwd)."""
    plan = make_plan(x, per_channel, _spec(family, opt, m, n, n_params, positive, lo, hi))
    xd = x if plan.dense else x.contiguous()
    y = torch.empty_like(xd)
    if xd.numel() > 0 and _launch_now(xd):
        layout = plan.layout
        torch.library.wrap_triton(act_fwd_kernel)[plan.fwd_grid](
            xd, y, table, layout.R, layout.C, layout.I, **plan.fwd_kwargs
        )
    return y


def _backward(
    x: torch.Tensor,
    dy: torch.Tensor,
    table: torch.Tensor,
    per_channel: bool,
    family: int,
    opt: int,
    m: int,
    n: int,
    n_params: int,
    positive: int,
    lo: float,
    hi: float,
    need_dx: bool,
    need_dp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, gradient table); empty tensors for what is not needed (actsearch::fused_act_bwd)."""
    plan = make_plan(x, per_channel, _spec(family, opt, m, n, n_params, positive, lo, hi))
    xd = x if plan.dense else x.contiguous()
    if dy.dtype != xd.dtype or dy.stride() != xd.stride() or dy.shape != xd.shape:
        dy = torch.empty_like(xd).copy_(dy)
    dx = torch.empty_like(xd) if need_dx else xd.new_empty(0)
    if xd.numel() == 0:
        grad = torch.zeros_like(table) if need_dp else table.new_empty(0)
        return dx, grad
    layout = plan.layout
    grid, extra = backward_grid(plan, xd, table)
    part = torch.empty((grid[0], *table.shape), device=xd.device, dtype=torch.float32)
    if _launch_now(xd):
        torch.library.wrap_triton(getattr(_triton, plan.bwd_kernel))[grid](
            xd,
            dy,
            dx if need_dx else dy,
            table,
            part,
            layout.R,
            layout.C,
            layout.I,
            *extra,
            **plan.bwd_kwargs[need_dx, need_dp],
        )
    grad = part.sum(dim=0) if need_dp else table.new_empty(0)
    return dx, grad


if OPS:
    fused_act_fwd = torch.library.triton_op("actsearch::fused_act_fwd", mutates_args=())(_forward)
    fused_act_bwd = torch.library.triton_op("actsearch::fused_act_bwd", mutates_args=())(_backward)

    def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, table, *meta = inputs
        ctx.save_for_backward(x, table)
        ctx.meta = tuple(meta)

    def _autograd_backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, table = ctx.saved_tensors
        need_dx, need_dp = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
        dx, grad = fused_act_bwd(x, dy, table, *ctx.meta, need_dx, need_dp)
        return (dx if need_dx else None, grad if need_dp else None, *([None] * len(ctx.meta)))

    fused_act_fwd.register_autograd(_autograd_backward, setup_context=_setup_context)


def apply(x: torch.Tensor, spec: OpSpec, *params: torch.Tensor) -> torch.Tensor:
    """The fused activation through the registered op; autograd reaches params via the table."""
    channels = x.shape[1] if x.ndim >= 2 else None
    table, per_channel = pack_params(params, spec, channels)
    lo, hi = spec.log_bounds
    return torch.ops.actsearch.fused_act_fwd(
        x,
        table,
        per_channel,
        spec.family,
        spec.opt,
        spec.m,
        spec.n,
        spec.n_params,
        spec.positive,
        lo,
        hi,
    )
