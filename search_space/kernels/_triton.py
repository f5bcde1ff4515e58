"""Triton kernels for the learnable activations (forward and backward, fp32 math).

Imported lazily by the launch side (`search_space.kernels._launch`, `_plan`): importing it
imports triton, and `TRITON_INTERPRET=1` must be set before that to run the kernels on the CPU.
The helpers (tiling, parameter gather, gradient reduction, family math) are `_triton_math`.

Every kernel works on a 2-D tile of a logical (R, C, I) view of the input, where the memory
offset of element (r, c, i) is r*C*I + c*I + i:
- INNER mode (LAST=False): the program owns one channel c (params are scalars) and a
  [BR, BX] tile over (r, i); a contiguous (N, C, H, W) tensor is R=N, I=H*W; a shared-scope
  tensor of any dense layout is R=1, C=1, I=numel.
- LAST mode (LAST=True, I == 1): a [BR, BX] tile over (r, c); params are [1, BX] vectors
  gathered by channel; a channels_last (N, C, H, W) tensor is R=N*H*W, and an (N, C) one R=N.
Parameter gradients are reduced inside each program and written to a partial buffer
[programs along axis 0, P, C] (C = 1 for shared parameters) that the caller sums over its first
dimension into the parameter-major [P, C] table layout, so there are no atomics and the result
is deterministic. Two backward kernels share the math (`_bwd_math`): `act_bwd_kernel` (v1, one
tile per program, one block reduction per parameter per tile) and `act_bwd_loop_kernel` (v2,
each program loops over a strided range of tiles with per-parameter register accumulators and
reduces once at the end).

Table rows whose bit is set in POS hold log(value) (how the modules store positive parameters):
the kernels use exp(clamp(row, LO, HI)) and multiply that row's gradient by the derivative of
the same map, so the caller's parametrisation costs no torch ops per step.
"""

# Triton compiles a subset of Python: `x in (A, B)` on constexprs and conditional expressions
# over tensors are avoided on purpose.
# ruff: noqa: SIM108, SIM109
from __future__ import annotations

import triton
import triton.language as tl

from search_space.kernels._triton_math import (
    FORM_A,
    FORM_B,
    PAU,
    SMU,
    SMU1,
    SWISH,
    basis_first,
    basis_next,
    basis_next_d,
    dpoly,
    grad,
    opau_fwd,
    param,
    param_pos,
    pau_den,
    poly,
    put_grad,
    sigmoid,
    sign,
    smu_bwd,
    smu_fwd,
    tile,
    tile_at,
)


@triton.jit
def act_fwd_kernel(
    x_ptr,
    y_ptr,
    p_ptr,
    R,
    C,
    INNER,
    FAMILY: tl.constexpr,
    OPT: tl.constexpr,
    M: tl.constexpr,
    N: tl.constexpr,
    K: tl.constexpr,
    P: tl.constexpr,
    POS: tl.constexpr,
    LO: tl.constexpr,
    HI: tl.constexpr,
    LAST: tl.constexpr,
    BR: tl.constexpr,
    BX: tl.constexpr,
    BIG: tl.constexpr,
):
    """y = f(x; params) for one tile; OPT is the SMU variant, PAU form or OPAU basis."""
    offs, mask, chan, cmask = tile(R, C, INNER, LAST, BR, BX, BIG)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if FAMILY == SMU or FAMILY == SMU1:
        alpha, _da = param_pos(p_ptr, chan, cmask, 0, C, LAST, POS, LO, HI)
        mu, _dm = param_pos(p_ptr, chan, cmask, 1, C, LAST, POS, LO, HI)
        y = smu_fwd(x, alpha, mu, FAMILY - SMU)
    elif FAMILY == SWISH:
        beta, _db = param_pos(p_ptr, chan, cmask, 0, C, LAST, POS, LO, HI)
        y = x * sigmoid(beta * x)
    elif FAMILY == PAU:
        num = poly(x, p_ptr, chan, cmask, 0, M, C, LAST)
        q, _dq, _s = pau_den(x, p_ptr, chan, cmask, M, N, OPT, C, LAST)
        y = num / q
    else:
        num, den = opau_fwd(x, p_ptr, chan, cmask, M, N, K, OPT, C, LAST)
        y = num / den
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_math(
    x,
    dy,
    p_ptr,
    chan,
    cmask,
    C,
    acc,
    part_ptr,
    FAMILY: tl.constexpr,
    OPT: tl.constexpr,
    M: tl.constexpr,
    N: tl.constexpr,
    K: tl.constexpr,
    P: tl.constexpr,
    POS: tl.constexpr,
    LO: tl.constexpr,
    HI: tl.constexpr,
    LAST: tl.constexpr,
    NEED_DP: tl.constexpr,
    ACC: tl.constexpr,
    FOLD: tl.constexpr,
):
    """(df/dx, acc) for one tile; each parameter's term dy * df/dparam goes through `grad`."""
    if FAMILY == SMU or FAMILY == SMU1:
        alpha, da = param_pos(p_ptr, chan, cmask, 0, C, LAST, POS, LO, HI)
        mu, dm = param_pos(p_ptr, chan, cmask, 1, C, LAST, POS, LO, HI)
        dfdx, dfda, dfdm = smu_bwd(x, alpha, mu, FAMILY - SMU)
        if NEED_DP:
            if (POS >> 0) & 1:
                dfda = dfda * da
            if (POS >> 1) & 1:
                dfdm = dfdm * dm
            acc = grad(acc, 0, dy * dfda, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
            acc = grad(acc, 1, dy * dfdm, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
    elif FAMILY == SWISH:
        beta, db = param_pos(p_ptr, chan, cmask, 0, C, LAST, POS, LO, HI)
        z = beta * x
        sg = sigmoid(z)
        ds = sg * (1.0 - sg)
        dfdx = sg + z * ds
        if NEED_DP:
            dfdb = x * x * ds
            if POS & 1:
                dfdb = dfdb * db
            acc = grad(acc, 0, dy * dfdb, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
    elif FAMILY == PAU:
        num = poly(x, p_ptr, chan, cmask, 0, M, C, LAST)
        dnum = dpoly(x, p_ptr, chan, cmask, 0, M, C, LAST)
        q, dq, s = pau_den(x, p_ptr, chan, cmask, M, N, OPT, C, LAST)
        rq = 1.0 / q
        fval = num * rq
        dfdx = (dnum - fval * dq) * rq
        if NEED_DP:
            g = dy * rq  # dF/da_j = x^j / Q
            xp = tl.zeros_like(x) + 1.0
            for j in tl.static_range(M + 1):
                acc = grad(acc, j, g * xp, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
                xp = xp * x
            h = -g * fval  # -dy * P / Q^2
            if OPT == FORM_A:
                ax = tl.abs(x)
                xp = ax
                for k in tl.static_range(1, N + 1):
                    sb = sign(param(p_ptr, chan, cmask, M + k, C, LAST))
                    acc = grad(
                        acc, M + k, h * xp * sb, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST
                    )
                    xp = xp * ax
            elif OPT == FORM_B:
                hs = h * s
                xp = x
                for k in tl.static_range(1, N + 1):
                    acc = grad(acc, M + k, hs * xp, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
                    xp = xp * x
            else:
                hs = h * s
                xp = tl.zeros_like(x) + 1.0
                for k in tl.static_range(N + 1):
                    acc = grad(
                        acc, M + 1 + k, hs * xp, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST
                    )
                    xp = xp * x
    else:
        # OPAU: pass 1 gives N and D; pass 2 recomputes the basis with its derivatives.
        num, den = opau_fwd(x, p_ptr, chan, cmask, M, N, K, OPT, C, LAST)
        rd = 1.0 / den
        fval = num * rd
        g = dy * rd
        h = -g * fval
        if NEED_DP:
            acc = grad(acc, 0, g, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)  # f_0 = 1
        dnum = tl.zeros_like(x)
        dden = tl.zeros_like(x)
        fm = tl.zeros_like(x) + 1.0
        dfm = tl.zeros_like(x)
        f, df = basis_first(x, OPT)
        for n in tl.static_range(1, K + 1):
            if n <= M:
                dnum = dnum + param(p_ptr, chan, cmask, n, C, LAST) * df
                if NEED_DP:
                    acc = grad(acc, n, g * f, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
            if n <= N:
                dn = param(p_ptr, chan, cmask, M + n, C, LAST)
                sf = sign(f)
                dden = dden + tl.abs(dn) * sf * df
                if NEED_DP:
                    term = h * sign(dn) * tl.abs(f)
                    acc = grad(acc, M + n, term, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
            if n < K:
                g1 = basis_next(x, f, fm, n, OPT)
                dg1 = basis_next_d(x, f, df, dfm, n, OPT)
                fm = f
                dfm = df
                f = g1
                df = dg1
        dfdx = (dnum - fval * dden) * rd
    return dfdx, acc


@triton.jit
def act_bwd_kernel(
    x_ptr,
    dy_ptr,
    dx_ptr,
    p_ptr,
    part_ptr,
    R,
    C,
    INNER,
    FAMILY: tl.constexpr,
    OPT: tl.constexpr,
    M: tl.constexpr,
    N: tl.constexpr,
    K: tl.constexpr,
    P: tl.constexpr,
    POS: tl.constexpr,
    LO: tl.constexpr,
    HI: tl.constexpr,
    LAST: tl.constexpr,
    BR: tl.constexpr,
    BX: tl.constexpr,
    BIG: tl.constexpr,
    NEED_DX: tl.constexpr,
    NEED_DP: tl.constexpr,
):
    """Backward v1: one tile per program; dx = dy * f'(x), and the tile's sum of
    dy * df/dparam for every param (one block-wide reduction per parameter)."""
    offs, mask, chan, cmask = tile(R, C, INNER, LAST, BR, BX, BIG)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dfdx, _acc = _bwd_math(
        x, dy, p_ptr, chan, cmask, C, (), part_ptr,
        FAMILY, OPT, M, N, K, P, POS, LO, HI, LAST, NEED_DP, False, 1,
    )  # fmt: skip
    if NEED_DX:
        tl.store(dx_ptr + offs, (dy * dfdx).to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def act_bwd_loop_kernel(
    x_ptr,
    dy_ptr,
    dx_ptr,
    p_ptr,
    part_ptr,
    R,
    C,
    INNER,
    TILES,
    FAMILY: tl.constexpr,
    OPT: tl.constexpr,
    M: tl.constexpr,
    N: tl.constexpr,
    K: tl.constexpr,
    P: tl.constexpr,
    POS: tl.constexpr,
    LO: tl.constexpr,
    HI: tl.constexpr,
    LAST: tl.constexpr,
    BR: tl.constexpr,
    BX: tl.constexpr,
    BIG: tl.constexpr,
    NEED_DX: tl.constexpr,
    NEED_DP: tl.constexpr,
    FOLD: tl.constexpr,
):
    """Backward v2: each program loops over tiles pid0, pid0 + G, ... < TILES along axis 0
    (G = programs along axis 0) and adds every parameter's gradient terms into its own fp32
    register accumulator ([BR, BX // FOLD]: FOLD neighbours along BX pre-summed in-thread),
    reduced once per program at the end into its row of the partial buffer [G, P, C]: P
    block-wide reductions per program instead of per tile, no atomics.

    Axis 1 is the channel (INNER mode) or the channel block (LAST mode) as in v1, so in LAST
    mode (channels innermost, FOLD = 1) each accumulator column is one channel.
    """
    pid0 = tl.program_id(0)
    pid1 = tl.program_id(1)
    acc = (tl.zeros([BR, BX // FOLD], dtype=tl.float32),) * P
    for t in range(pid0, TILES, tl.num_programs(0)):
        offs, mask, chan, cmask = tile_at(t, pid1, R, C, INNER, LAST, BR, BX, BIG)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        # masked elements have dy = 0 and finite terms (x = 0, masked params 1.0): they add 0
        dfdx, acc = _bwd_math(
            x, dy, p_ptr, chan, cmask, C, acc, part_ptr,
            FAMILY, OPT, M, N, K, P, POS, LO, HI, LAST, NEED_DP, True, FOLD,
        )  # fmt: skip
        if NEED_DX:
            tl.store(dx_ptr + offs, (dy * dfdx).to(dx_ptr.dtype.element_ty), mask=mask)
    if NEED_DP:
        if LAST:
            chan = pid1 * BX + tl.arange(0, BX)
        else:
            chan = pid1
        cmask = chan < C
        for j in tl.static_range(P):
            put_grad(part_ptr, chan, cmask, C, j, acc[j], P, LAST)
