"""The fused op: an autograd function when eager, the registered torch.library op when compiled.

Both run the same launch path (`_launch`) from the same plan (`_plan`); this module only picks
which of the two wraps it, per call.
"""

from __future__ import annotations

from typing import Any

import torch

from search_space.kernels._launch import (
    launch_backward,
    launch_forward,
    pack_params,
    unpack_grads,
)
from search_space.kernels._plan import OpSpec, plan_for


class FusedActivation(torch.autograd.Function):
    """Forward and backward of one activation family through the Triton kernels."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, spec: OpSpec, *params: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1] if x.ndim >= 2 else None
        table, per_channel = pack_params(params, spec, channels)
        if table.device != x.device:
            raise ValueError(f"parameters are on {table.device} but the input is on {x.device}")
        plan = plan_for(x, per_channel, spec)
        xd = x if plan.dense else x.contiguous()
        y = launch_forward(xd, table, plan)
        ctx.save_for_backward(xd, table)
        ctx.spec = spec
        ctx.plan = plan
        ctx.shapes = tuple(p.shape for p in params)
        ctx.dtypes = tuple(p.dtype for p in params)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xd, table = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[2:])
        need_dx = ctx.needs_input_grad[0]
        dx, grad = launch_backward(xd, dy, table, ctx.plan, need_dx, any(needs))
        if grad is None:
            return (dx, None, *([None] * len(needs)))
        return (dx, None, *unpack_grads(grad, ctx.shapes, ctx.dtypes, ctx.spec, needs))


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def fused_apply(x: torch.Tensor, spec: OpSpec, *params: torch.Tensor) -> torch.Tensor:
    """The fused op: the autograd function when eager, the torch.library op under torch.compile.

    While torch.compile traces, the registered triton ops (`_library`, torch >= 2.6) let it
    capture the kernels instead of breaking the graph; older torch traces the autograd function.
    """
    if _compiling():
        # imported here: it imports triton and registers the ops (it does not import this module)
        from search_space.kernels import _library

        if _library.OPS:
            return _library.apply(x, spec, *params)
    out: torch.Tensor = FusedActivation.apply(x, spec, *params)
    return out
