"""The fused activation as `torch.library.triton_op`s, so torch.compile can capture it.

Imported only while torch.compile traces a fused call (`_ops.fused_apply`): importing it
registers two ops, `actsearch::fused_act_fwd` and `actsearch::fused_act_bwd`, whose bodies run
the eager path's launches (`_launch`) through `torch.library.wrap_triton` (Inductor sees the
kernels and can place them in its graph, and in a CUDA graph with it). Eager calls keep
`_ops.FusedActivation`: a custom op's eager dispatch costs more host time than the autograd
function it would replace.

`OPS` is False on torch < 2.6 (no triton_op / wrap_triton); `_ops.fused_apply` then traces the
autograd function instead.
"""

from __future__ import annotations

from typing import Any

import torch

from search_space.kernels._launch import launch_backward, launch_forward, pack_params
from search_space.kernels._plan import OpSpec, make_plan

OPS = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")


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
    return launch_forward(xd, table, plan, library=True)


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
    dx, grad = launch_backward(xd, dy, table, plan, need_dx, need_dp, library=True)
    # an op returns tensors, never None
    return (
        dx if dx is not None else xd.new_empty(0),
        grad if grad is not None else table.new_empty(0),
    )


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
