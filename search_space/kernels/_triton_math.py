"""Triton building blocks of the activation kernels: tiling, parameter gather, gradient
reduction and each family's math (fp32), all `@triton.jit` helpers inlined into the kernels of
`search_space.kernels._triton` (see its docstring for the tile layout and the table format).

Importing this module imports triton: `TRITON_INTERPRET=1` must be set before that to run the
kernels on the CPU.
"""

# Triton compiles a subset of Python: `x in (A, B)` on constexprs, conditional expressions
# over tensors and starred unpacking into tuples are avoided on purpose.
# ruff: noqa: SIM108, SIM109, RUF005
from __future__ import annotations

import triton
import triton.language as tl

from search_space.kernels._ids import Op, OpauBasis, PauForm

# The FAMILY and OPT arguments' values as the constexprs the kernels compare against.
SMU: tl.constexpr = tl.constexpr(int(Op.SMU))
SMU1: tl.constexpr = tl.constexpr(int(Op.SMU1))
SWISH: tl.constexpr = tl.constexpr(int(Op.SWISH))
PAU: tl.constexpr = tl.constexpr(int(Op.PAU))
OPAU: tl.constexpr = tl.constexpr(int(Op.OPAU))
FORM_A: tl.constexpr = tl.constexpr(int(PauForm.A))
FORM_B: tl.constexpr = tl.constexpr(int(PauForm.B))
FORM_C: tl.constexpr = tl.constexpr(int(PauForm.C))
CHEB_T: tl.constexpr = tl.constexpr(int(OpauBasis.CHEBYSHEV_T))
CHEB_U: tl.constexpr = tl.constexpr(int(OpauBasis.CHEBYSHEV_U))
HERM_H: tl.constexpr = tl.constexpr(int(OpauBasis.HERMITE_H))
HERM_HE: tl.constexpr = tl.constexpr(int(OpauBasis.HERMITE_HE))
LAGUERRE: tl.constexpr = tl.constexpr(int(OpauBasis.LAGUERRE))
LEGENDRE: tl.constexpr = tl.constexpr(int(OpauBasis.LEGENDRE))

_INV_SQRT_PI: tl.constexpr = tl.constexpr(0.5641895835477563)


# ---------------------------------------------------------------------------------------------
# Tiling, parameter gather and per-program gradient reduction
# ---------------------------------------------------------------------------------------------


@triton.jit
def tile(R, C, INNER, LAST: tl.constexpr, BR: tl.constexpr, BX: tl.constexpr, BIG: tl.constexpr):
    """The program's own tile (one tile per program: forward and backward v1)."""
    return tile_at(tl.program_id(0), tl.program_id(1), R, C, INNER, LAST, BR, BX, BIG)


@triton.jit
def tile_at(
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
def param(p_ptr, chan, cmask, j: tl.constexpr, PS, LAST: tl.constexpr):
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
def param_pos(
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
    raw = param(p_ptr, chan, cmask, j, PS, LAST)
    if (POS >> j) & 1:
        value = tl.exp(tl.minimum(tl.maximum(raw, LO), HI))
        dvalue = tl.where((raw >= LO) & (raw <= HI), value, 0.0)
    else:
        value = raw
        dvalue = raw * 0.0 + 1.0
    return value, dvalue


@triton.jit
def put_grad(part_ptr, chan, cmask, C, j: tl.constexpr, term, P: tl.constexpr, LAST: tl.constexpr):
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
def grad(
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
        put_grad(part_ptr, chan, cmask, C, j, term, P, LAST)
    return acc


@triton.jit
def sign(v):
    """sign(v) with sign(0) = 0, as torch.abs's gradient uses."""
    return tl.where(v > 0, 1.0, tl.where(v < 0, -1.0, 0.0))


# ---------------------------------------------------------------------------------------------
# Family math (x and parameters fp32)
# ---------------------------------------------------------------------------------------------


@triton.jit
def smu_fwd(x, alpha, mu, VARIANT: tl.constexpr):
    """SMU (VARIANT 0) or SMU-1 (VARIANT 1)."""
    oma = 1.0 - alpha
    if VARIANT == SMU:
        y = 0.5 * ((1.0 + alpha) * x + oma * x * tl.math.erf(mu * oma * x))
    else:
        y = 0.5 * ((1.0 + alpha) * x + tl.sqrt(oma * oma * x * x + mu * mu))
    return y


@triton.jit
def smu_bwd(x, alpha, mu, VARIANT: tl.constexpr):
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
def sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def poly(x, p_ptr, chan, cmask, OFF: tl.constexpr, DEG: tl.constexpr, PS, LAST: tl.constexpr):
    """sum_{j=0..DEG} p[OFF+j] x^j by Horner."""
    acc = param(p_ptr, chan, cmask, OFF + DEG, PS, LAST) + tl.zeros_like(x)
    for t in tl.static_range(DEG):
        acc = acc * x + param(p_ptr, chan, cmask, OFF + DEG - 1 - t, PS, LAST)
    return acc


@triton.jit
def dpoly(x, p_ptr, chan, cmask, OFF: tl.constexpr, DEG: tl.constexpr, PS, LAST: tl.constexpr):
    """d/dx sum_{j=0..DEG} p[OFF+j] x^j = sum_{j=1..DEG} j p[OFF+j] x^(j-1) by Horner."""
    acc = tl.zeros_like(x)
    if DEG > 0:
        acc = DEG * param(p_ptr, chan, cmask, OFF + DEG, PS, LAST) + acc
        for t in tl.static_range(DEG - 1):
            acc = acc * x + (DEG - 1 - t) * param(p_ptr, chan, cmask, OFF + DEG - 1 - t, PS, LAST)
    return acc


@triton.jit
def _abs_poly(ax, p_ptr, chan, cmask, OFF: tl.constexpr, N: tl.constexpr, PS, LAST: tl.constexpr):
    """(sum_{k=1..N} |b_k| ax^k, sum_{k=1..N} k |b_k| ax^(k-1)); b_k at p[OFF+k-1]."""
    q = tl.zeros_like(ax)
    dq = tl.zeros_like(ax)
    for t in tl.static_range(N):
        bk = tl.abs(param(p_ptr, chan, cmask, OFF + N - t - 1, PS, LAST))
        q = (q + bk) * ax
        if t == 0:
            dq = N * bk + dq
        else:
            dq = dq * ax + (N - t) * bk
    return q, dq


@triton.jit
def pau_den(
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
        s = sign(x)
        q = 1.0 + q
        dq = s * dq
    elif FORM == FORM_B:
        # A = sum_{k=1..N} b_k x^k = x * poly(b_1..b_N); b_k at OFF+k-1
        h = poly(x, p_ptr, chan, cmask, OFF, N - 1, PS, LAST)
        dh = dpoly(x, p_ptr, chan, cmask, OFF, N - 1, PS, LAST)
        a = x * h
        s = sign(a)
        q = 1.0 + tl.abs(a)
        dq = s * (h + x * dh)
    else:
        a = poly(x, p_ptr, chan, cmask, OFF, N, PS, LAST)
        s = sign(a)
        q = 0.1 + tl.abs(a)
        dq = s * dpoly(x, p_ptr, chan, cmask, OFF, N, PS, LAST)
    return q, dq, s


@triton.jit
def basis_first(x, BASIS: tl.constexpr):
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
def basis_next(x, f, fm, n: tl.constexpr, BASIS: tl.constexpr):
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
def basis_next_d(x, f, df, dfm, n: tl.constexpr, BASIS: tl.constexpr):
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
def opau_fwd(
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
    num = param(p_ptr, chan, cmask, 0, PS, LAST) + tl.zeros_like(x)
    den = tl.zeros_like(x) + 1.0
    fm = tl.zeros_like(x) + 1.0
    f, _d1 = basis_first(x, BASIS)
    for n in tl.static_range(1, K + 1):
        if n <= KN:
            num = num + param(p_ptr, chan, cmask, n, PS, LAST) * f
        if n <= KD:
            den = den + tl.abs(param(p_ptr, chan, cmask, KN + n, PS, LAST)) * tl.abs(f)
        if n < K:
            g = basis_next(x, f, fm, n, BASIS)
            fm = f
            f = g
    return num, den
