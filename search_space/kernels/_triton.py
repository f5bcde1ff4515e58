"""Triton kernels for the learnable activations (forward and backward, fp32 math).

Imported lazily by `search_space.kernels._ops`: importing it imports triton, and
`TRITON_INTERPRET=1` must be set before that to run the kernels on the CPU.

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

# Triton compiles a subset of Python: `x in (A, B)` on constexprs, conditional expressions
# over tensors and starred unpacking into tuples are avoided on purpose.
# ruff: noqa: SIM108, SIM109, RUF005
from __future__ import annotations

import triton
import triton.language as tl

# Family ids (the FAMILY argument), PAU forms and OPAU bases (the OPT argument); the ops
# module passes the same numbers (`search_space.kernels._ops`).
SMU: tl.constexpr = tl.constexpr(0)
SMU1: tl.constexpr = tl.constexpr(1)
SWISH: tl.constexpr = tl.constexpr(2)
PAU: tl.constexpr = tl.constexpr(3)
OPAU: tl.constexpr = tl.constexpr(4)
FORM_A: tl.constexpr = tl.constexpr(0)
FORM_B: tl.constexpr = tl.constexpr(1)
FORM_C: tl.constexpr = tl.constexpr(2)
CHEB_T: tl.constexpr = tl.constexpr(0)
CHEB_U: tl.constexpr = tl.constexpr(1)
HERM_H: tl.constexpr = tl.constexpr(2)
HERM_HE: tl.constexpr = tl.constexpr(3)
LAGUERRE: tl.constexpr = tl.constexpr(4)
LEGENDRE: tl.constexpr = tl.constexpr(5)

_INV_SQRT_PI: tl.constexpr = tl.constexpr(0.5641895835477563)


# ---------------------------------------------------------------------------------------------
# Tiling, parameter gather and per-program gradient reduction
# ---------------------------------------------------------------------------------------------


@triton.jit
def _tile(R, C, INNER, LAST: tl.constexpr, BR: tl.constexpr, BX: tl.constexpr, BIG: tl.constexpr):
    """The program's own tile (one tile per program: forward and backward v1)."""
    return _tile_at(tl.program_id(0), tl.program_id(1), R, C, INNER, LAST, BR, BX, BIG)


@triton.jit
def _tile_at(
    pid0,
    pid1,
    R,
    C,
    INNER,
    LAST: tl.constexpr,
    BR: tl.constexpr,
    BX: tl.constexpr,
    BIG: tl.constexpr,
):
    """Offsets, mask and channel index (scalar in INNER mode, [BX] vector in LAST mode) of tile
    pid0 along axis 0 (row blocks, times inner blocks in INNER mode) and pid1 along axis 1
    (the channel in INNER mode, a channel block in LAST mode)."""
    if LAST:
        rows = pid0 * BR + tl.arange(0, BR)
        chan = pid1 * BX + tl.arange(0, BX)
        rmask = rows < R
        cmask = chan < C
        if BIG:
            rows = rows.to(tl.int64)
        offs = rows[:, None] * C + chan[None, :]
        mask = rmask[:, None] & cmask[None, :]
    else:
        nib = tl.cdiv(INNER, BX)
        rb = pid0 // nib
        ib = pid0 % nib
        rows = rb * BR + tl.arange(0, BR)
        cols = ib * BX + tl.arange(0, BX)
        rmask = rows < R
        if BIG:
            rows = rows.to(tl.int64)
            base = pid1.to(tl.int64) * INNER
        else:
            base = pid1 * INNER
        offs = (rows[:, None] * C) * INNER + base + cols[None, :]
        mask = rmask[:, None] & (cols < INNER)[None, :]
        chan = pid1
        cmask = chan < C
    return offs, mask, chan, cmask


@triton.jit
def _param(p_ptr, chan, cmask, j: tl.constexpr, PS, LAST: tl.constexpr):
    """Parameter j for the tile: a scalar (INNER) or a [1, BX] row of channels (LAST).

    The table is [P, PS] (parameter-major, PS = C per channel or 1 shared), so a LAST-mode
    row of channels is one coalesced load.
    """
    if LAST:
        # masked channels get 1.0: finite for every family (0 would make SMU-1 divide by 0)
        v = tl.load(p_ptr + j * PS + chan, mask=cmask, other=1.0)[None, :]
    else:
        v = tl.load(p_ptr + j * PS + chan)
    return v


@triton.jit
def _param_pos(
    p_ptr,
    chan,
    cmask,
    j: tl.constexpr,
    PS,
    LAST: tl.constexpr,
    POS: tl.constexpr,
    LO: tl.constexpr,
    HI: tl.constexpr,
):
    """(value, d value / d row) of parameter j; rows flagged in POS hold log(value).

    The flagged map is exp(clamp(row, LO, HI)), as the modules compute it; its derivative is
    value inside [LO, HI] and 0 outside (torch.clamp's gradient).
    """
    raw = _param(p_ptr, chan, cmask, j, PS, LAST)
    if (POS >> j) & 1:
        value = tl.exp(tl.minimum(tl.maximum(raw, LO), HI))
        dvalue = tl.where((raw >= LO) & (raw <= HI), value, 0.0)
    else:
        value = raw
        dvalue = raw * 0.0 + 1.0
    return value, dvalue


@triton.jit
def _put_grad(part_ptr, chan, cmask, C, j: tl.constexpr, term, P: tl.constexpr, LAST: tl.constexpr):
    """Reduce one parameter's gradient term over the tile into the partial buffer.

    The buffer is [programs along axis 0, P, C]: summed over its first dimension it is the
    parameter-major table layout, so the caller needs one reduction and no transpose.
    """
    pid0 = tl.program_id(0)
    if LAST:
        # a coalesced row of channels per parameter
        tl.store(part_ptr + (pid0 * P + j) * C + chan, tl.sum(term, axis=0), mask=cmask)
    else:
        tl.store(part_ptr + (pid0 * P + j) * C + chan, tl.sum(tl.sum(term, axis=1), axis=0))


@triton.jit
def _fold(term, FOLD: tl.constexpr):
    """A [BR, BX] term summed over runs of FOLD neighbours along BX: [BR, BX // FOLD].

    With FOLD = the elements each thread holds contiguously (INNER mode), the sum stays inside
    each thread (no shuffles, no barriers) and the accumulators need FOLD times fewer registers.
    """
    if FOLD == 1:
        out = term
    else:
        BR: tl.constexpr = term.shape[0]
        BX: tl.constexpr = term.shape[1]
        out = tl.sum(tl.reshape(term, [BR, BX // FOLD, FOLD]), axis=2)
    return out


@triton.jit
def _grad(
    acc,
    j: tl.constexpr,
    term,
    ACC: tl.constexpr,
    FOLD: tl.constexpr,
    part_ptr,
    chan,
    cmask,
    C,
    P: tl.constexpr,
    LAST: tl.constexpr,
):
    """Parameter j's gradient term for the tile: added to the register accumulator acc[j]
    (ACC, backward v2: reduced once per program at the end) or reduced over the tile into the
    partial buffer right away (backward v1: one block-wide reduction per parameter per tile).
    Returns the accumulator tuple (unchanged in v1)."""
    if ACC:
        acc = acc[:j] + (acc[j] + _fold(term, FOLD),) + acc[j + 1 :]
    else:
        _put_grad(part_ptr, chan, cmask, C, j, term, P, LAST)
    return acc


@triton.jit
def _sign(v):
    """sign(v) with sign(0) = 0, as torch.abs's gradient uses."""
    return tl.where(v > 0, 1.0, tl.where(v < 0, -1.0, 0.0))


# ---------------------------------------------------------------------------------------------
# Family math (x and parameters fp32)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _smu_fwd(x, alpha, mu, VARIANT: tl.constexpr):
    """SMU (VARIANT 0) or SMU-1 (VARIANT 1)."""
    oma = 1.0 - alpha
    if VARIANT == SMU:
        y = 0.5 * ((1.0 + alpha) * x + oma * x * tl.math.erf(mu * oma * x))
    else:
        y = 0.5 * ((1.0 + alpha) * x + tl.sqrt(oma * oma * x * x + mu * mu))
    return y


@triton.jit
def _smu_bwd(x, alpha, mu, VARIANT: tl.constexpr):
    """(df/dx, df/dalpha, df/dmu)."""
    oma = 1.0 - alpha
    if VARIANT == SMU:
        u = mu * oma * x
        e = tl.exp(-u * u) * _INV_SQRT_PI
        erfu = tl.math.erf(u)
        dfdx = 0.5 * ((1.0 + alpha) + oma * erfu) + oma * u * e
        dfda = 0.5 * x * (1.0 - erfu) - u * x * e
        dfdm = oma * oma * x * x * e
    else:
        r = tl.sqrt(oma * oma * x * x + mu * mu)
        inv = 1.0 / r
        dfdx = 0.5 * ((1.0 + alpha) + oma * oma * x * inv)
        dfda = 0.5 * (x - oma * x * x * inv)
        dfdm = 0.5 * mu * inv
    return dfdx, dfda, dfdm


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _poly(x, p_ptr, chan, cmask, OFF: tl.constexpr, DEG: tl.constexpr, PS, LAST: tl.constexpr):
    """sum_{j=0..DEG} p[OFF+j] x^j by Horner."""
    acc = _param(p_ptr, chan, cmask, OFF + DEG, PS, LAST) + tl.zeros_like(x)
    for t in tl.static_range(DEG):
        acc = acc * x + _param(p_ptr, chan, cmask, OFF + DEG - 1 - t, PS, LAST)
    return acc


@triton.jit
def _dpoly(x, p_ptr, chan, cmask, OFF: tl.constexpr, DEG: tl.constexpr, PS, LAST: tl.constexpr):
    """d/dx sum_{j=0..DEG} p[OFF+j] x^j = sum_{j=1..DEG} j p[OFF+j] x^(j-1) by Horner."""
    acc = tl.zeros_like(x)
    if DEG > 0:
        acc = DEG * _param(p_ptr, chan, cmask, OFF + DEG, PS, LAST) + acc
        for t in tl.static_range(DEG - 1):
            acc = acc * x + (DEG - 1 - t) * _param(p_ptr, chan, cmask, OFF + DEG - 1 - t, PS, LAST)
    return acc


@triton.jit
def _abs_poly(ax, p_ptr, chan, cmask, OFF: tl.constexpr, N: tl.constexpr, PS, LAST: tl.constexpr):
    """(sum_{k=1..N} |b_k| ax^k, sum_{k=1..N} k |b_k| ax^(k-1)); b_k at p[OFF+k-1]."""
    q = tl.zeros_like(ax)
    dq = tl.zeros_like(ax)
    for t in tl.static_range(N):
        bk = tl.abs(_param(p_ptr, chan, cmask, OFF + N - t - 1, PS, LAST))
        q = (q + bk) * ax
        if t == 0:
            dq = N * bk + dq
        else:
            dq = dq * ax + (N - t) * bk
    return q, dq


@triton.jit
def _pau_den(
    x,
    p_ptr,
    chan,
    cmask,
    M: tl.constexpr,
    N: tl.constexpr,
    FORM: tl.constexpr,
    PS,
    LAST: tl.constexpr,
):
    """(Q, dQ/dx, s) where s is sign(A) for forms B/C (unused for A)."""
    OFF: tl.constexpr = M + 1
    if FORM == FORM_A:
        q, dq = _abs_poly(tl.abs(x), p_ptr, chan, cmask, OFF, N, PS, LAST)
        s = _sign(x)
        q = 1.0 + q
        dq = s * dq
    elif FORM == FORM_B:
        # A = sum_{k=1..N} b_k x^k = x * poly(b_1..b_N); b_k at OFF+k-1
        h = _poly(x, p_ptr, chan, cmask, OFF, N - 1, PS, LAST)
        dh = _dpoly(x, p_ptr, chan, cmask, OFF, N - 1, PS, LAST)
        a = x * h
        s = _sign(a)
        q = 1.0 + tl.abs(a)
        dq = s * (h + x * dh)
    else:
        a = _poly(x, p_ptr, chan, cmask, OFF, N, PS, LAST)
        s = _sign(a)
        q = 0.1 + tl.abs(a)
        dq = s * _dpoly(x, p_ptr, chan, cmask, OFF, N, PS, LAST)
    return q, dq, s


@triton.jit
def _basis_first(x, BASIS: tl.constexpr):
    """(f_1(x), f_1'(x))."""
    if BASIS == CHEB_U or BASIS == HERM_H:
        f1 = 2.0 * x
        d1 = tl.zeros_like(x) + 2.0
    elif BASIS == LAGUERRE:
        f1 = 1.0 - x
        d1 = tl.zeros_like(x) - 1.0
    else:
        f1 = x
        d1 = tl.zeros_like(x) + 1.0
    return f1, d1


@triton.jit
def _basis_next(x, f, fm, n: tl.constexpr, BASIS: tl.constexpr):
    """f_{n+1} from f_n = f and f_{n-1} = fm."""
    if BASIS == CHEB_T or BASIS == CHEB_U:
        g = 2.0 * x * f - fm
    elif BASIS == HERM_H:
        g = 2.0 * x * f - (2.0 * n) * fm
    elif BASIS == HERM_HE:
        g = x * f - (1.0 * n) * fm
    elif BASIS == LAGUERRE:
        g = ((2.0 * n + 1.0 - x) * f - (1.0 * n) * fm) * (1.0 / (n + 1.0))
    else:
        g = ((2.0 * n + 1.0) * x * f - (1.0 * n) * fm) * (1.0 / (n + 1.0))
    return g


@triton.jit
def _basis_next_d(x, f, df, dfm, n: tl.constexpr, BASIS: tl.constexpr):
    """f'_{n+1} from f_n, f'_n and f'_{n-1} (the recurrence differentiated)."""
    if BASIS == CHEB_T or BASIS == CHEB_U:
        g = 2.0 * f + 2.0 * x * df - dfm
    elif BASIS == HERM_H:
        g = 2.0 * f + 2.0 * x * df - (2.0 * n) * dfm
    elif BASIS == HERM_HE:
        g = f + x * df - (1.0 * n) * dfm
    elif BASIS == LAGUERRE:
        g = (-f + (2.0 * n + 1.0 - x) * df - (1.0 * n) * dfm) * (1.0 / (n + 1.0))
    else:
        g = ((2.0 * n + 1.0) * (f + x * df) - (1.0 * n) * dfm) * (1.0 / (n + 1.0))
    return g


@triton.jit
def _opau_fwd(
    x,
    p_ptr,
    chan,
    cmask,
    KN: tl.constexpr,
    KD: tl.constexpr,
    K: tl.constexpr,
    BASIS: tl.constexpr,
    PS,
    LAST: tl.constexpr,
):
    """(N, D): N = sum_{i<=KN} c_i f_i, D = 1 + sum_{1<=j<=KD} |d_j| |f_j|; K = max(KN, KD)."""
    num = _param(p_ptr, chan, cmask, 0, PS, LAST) + tl.zeros_like(x)
    den = tl.zeros_like(x) + 1.0
    fm = tl.zeros_like(x) + 1.0
    f, _d1 = _basis_first(x, BASIS)
    for n in tl.static_range(1, K + 1):
        if n <= KN:
            num = num + _param(p_ptr, chan, cmask, n, PS, LAST) * f
        if n <= KD:
            den = den + tl.abs(_param(p_ptr, chan, cmask, KN + n, PS, LAST)) * tl.abs(f)
        if n < K:
            g = _basis_next(x, f, fm, n, BASIS)
            fm = f
            f = g
    return num, den


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


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
    offs, mask, chan, cmask = _tile(R, C, INNER, LAST, BR, BX, BIG)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if FAMILY == SMU or FAMILY == SMU1:
        alpha, _da = _param_pos(p_ptr, chan, cmask, 0, C, LAST, POS, LO, HI)
        mu, _dm = _param_pos(p_ptr, chan, cmask, 1, C, LAST, POS, LO, HI)
        y = _smu_fwd(x, alpha, mu, FAMILY - SMU)
    elif FAMILY == SWISH:
        beta, _db = _param_pos(p_ptr, chan, cmask, 0, C, LAST, POS, LO, HI)
        y = x * _sigmoid(beta * x)
    elif FAMILY == PAU:
        num = _poly(x, p_ptr, chan, cmask, 0, M, C, LAST)
        q, _dq, _s = _pau_den(x, p_ptr, chan, cmask, M, N, OPT, C, LAST)
        y = num / q
    else:
        num, den = _opau_fwd(x, p_ptr, chan, cmask, M, N, K, OPT, C, LAST)
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
    """(df/dx, acc) for one tile; each parameter's term dy * df/dparam goes through `_grad`."""
    if FAMILY == SMU or FAMILY == SMU1:
        alpha, da = _param_pos(p_ptr, chan, cmask, 0, C, LAST, POS, LO, HI)
        mu, dm = _param_pos(p_ptr, chan, cmask, 1, C, LAST, POS, LO, HI)
        dfdx, dfda, dfdm = _smu_bwd(x, alpha, mu, FAMILY - SMU)
        if NEED_DP:
            if (POS >> 0) & 1:
                dfda = dfda * da
            if (POS >> 1) & 1:
                dfdm = dfdm * dm
            acc = _grad(acc, 0, dy * dfda, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
            acc = _grad(acc, 1, dy * dfdm, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
    elif FAMILY == SWISH:
        beta, db = _param_pos(p_ptr, chan, cmask, 0, C, LAST, POS, LO, HI)
        z = beta * x
        sg = _sigmoid(z)
        ds = sg * (1.0 - sg)
        dfdx = sg + z * ds
        if NEED_DP:
            dfdb = x * x * ds
            if POS & 1:
                dfdb = dfdb * db
            acc = _grad(acc, 0, dy * dfdb, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
    elif FAMILY == PAU:
        num = _poly(x, p_ptr, chan, cmask, 0, M, C, LAST)
        dnum = _dpoly(x, p_ptr, chan, cmask, 0, M, C, LAST)
        q, dq, s = _pau_den(x, p_ptr, chan, cmask, M, N, OPT, C, LAST)
        rq = 1.0 / q
        fval = num * rq
        dfdx = (dnum - fval * dq) * rq
        if NEED_DP:
            g = dy * rq  # dF/da_j = x^j / Q
            xp = tl.zeros_like(x) + 1.0
            for j in tl.static_range(M + 1):
                acc = _grad(acc, j, g * xp, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
                xp = xp * x
            h = -g * fval  # -dy * P / Q^2
            if OPT == FORM_A:
                ax = tl.abs(x)
                xp = ax
                for k in tl.static_range(1, N + 1):
                    sb = _sign(_param(p_ptr, chan, cmask, M + k, C, LAST))
                    acc = _grad(
                        acc, M + k, h * xp * sb, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST
                    )
                    xp = xp * ax
            elif OPT == FORM_B:
                hs = h * s
                xp = x
                for k in tl.static_range(1, N + 1):
                    acc = _grad(acc, M + k, hs * xp, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
                    xp = xp * x
            else:
                hs = h * s
                xp = tl.zeros_like(x) + 1.0
                for k in tl.static_range(N + 1):
                    acc = _grad(
                        acc, M + 1 + k, hs * xp, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST
                    )
                    xp = xp * x
    else:
        # OPAU: pass 1 gives N and D; pass 2 recomputes the basis with its derivatives.
        num, den = _opau_fwd(x, p_ptr, chan, cmask, M, N, K, OPT, C, LAST)
        rd = 1.0 / den
        fval = num * rd
        g = dy * rd
        h = -g * fval
        if NEED_DP:
            acc = _grad(acc, 0, g, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)  # f_0 = 1
        dnum = tl.zeros_like(x)
        dden = tl.zeros_like(x)
        fm = tl.zeros_like(x) + 1.0
        dfm = tl.zeros_like(x)
        f, df = _basis_first(x, OPT)
        for n in tl.static_range(1, K + 1):
            if n <= M:
                dnum = dnum + _param(p_ptr, chan, cmask, n, C, LAST) * df
                if NEED_DP:
                    acc = _grad(acc, n, g * f, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
            if n <= N:
                dn = _param(p_ptr, chan, cmask, M + n, C, LAST)
                sf = _sign(f)
                dden = dden + tl.abs(dn) * sf * df
                if NEED_DP:
                    term = h * _sign(dn) * tl.abs(f)
                    acc = _grad(acc, M + n, term, ACC, FOLD, part_ptr, chan, cmask, C, P, LAST)
            if n < K:
                g1 = _basis_next(x, f, fm, n, OPT)
                dg1 = _basis_next_d(x, f, df, dfm, n, OPT)
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
    offs, mask, chan, cmask = _tile(R, C, INNER, LAST, BR, BX, BIG)
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
        offs, mask, chan, cmask = _tile_at(t, pid1, R, C, INNER, LAST, BR, BX, BIG)
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
            _put_grad(part_ptr, chan, cmask, C, j, acc[j], P, LAST)
