"""Curves f(x), f′(x) of activations (for plots and records) and the cheap pre-screen.

Curve of a site: for `shared`/`per_layer` scope the site's own curve. For `per_channel` scope
of a pointwise family, `f`/`df` are the curve of the channel-mean parameters, and
`f_min`/`f_max`/`df_min`/`df_max` the pointwise envelope of the per-channel curves. FReLU and
Meta-ACON are not pointwise: their curve is the response to a spatially constant input (the
centre of a constant 3×3 map, so every conv tap sees the same value), `f`/`df` the mean over
channels, plus the same envelope. Maxout's curve on a constant input is the identity.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from search_space.registry import (
    PRESCREEN_DF_LIMIT,
    PRESCREEN_F_LIMIT,
    PRESCREEN_FLAT_LIMIT,
    PRESCREEN_INTERVAL,
)

from .build import ActivationConfig, ActivationFactory, activation_sites
from .modules.base import ActivationModule

PRESCREEN_POINTS = 2001  # step 0.01, includes 0
F_LIMIT = PRESCREEN_F_LIMIT
DF_LIMIT = PRESCREEN_DF_LIMIT
FLAT_LIMIT = PRESCREEN_FLAT_LIMIT
PRESCREEN_SEED = 0  # FReLU / Meta-ACON convs get random initial weights


@dataclass(frozen=True)
class PrescreenResult:
    """Outcome of the pre-screen: ok, or the reason the candidate is rejected."""

    ok: bool
    reason: str | None = None


def _as_module(module_or_config: nn.Module | ActivationConfig | Mapping[str, Any]) -> nn.Module:
    if isinstance(module_or_config, nn.Module):
        return module_or_config
    return ActivationFactory(module_or_config)(1)


def _constant_input(module: nn.Module, x: Tensor, channels: int) -> Tensor:
    """x (G,) as the module's input: (G, C·k) for pointwise modules, a constant 3×3 map otherwise."""
    width = channels * getattr(module, "width_factor", 1)
    if getattr(module, "pointwise", True):
        return x[:, None].expand(-1, width)
    return x[:, None, None, None].expand(-1, width, 3, 3)


def _response(model: nn.Module, inputs: Tensor) -> Tensor:
    out = model(inputs)
    return out[:, :, 1, 1] if out.dim() == 4 else out


def channel_curves(
    module: nn.Module, x: ArrayLike, dtype: torch.dtype = torch.float64
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-channel f and df/dx, each (G, C), of a module (eval mode, a copy) on the points x.

    df is the total derivative for an input that equals x everywhere: one reverse pass when
    each output channel depends on its own input channel only (every family but Meta-ACON),
    central differences otherwise.
    """
    model = copy.deepcopy(module).to(dtype).eval()
    channels = int(getattr(model, "channels", 1))
    points = torch.as_tensor(np.asarray(x, dtype=np.float64).ravel(), dtype=dtype)
    if getattr(model, "channel_separable", True):
        inputs = _constant_input(model, points, channels).clone().requires_grad_(True)
        with torch.enable_grad():
            f = _response(model, inputs)
            (grad,) = torch.autograd.grad(f.sum(), inputs)
        # Sum the k inputs of each output (Maxout) and the taps of a constant map.
        df = grad.reshape(grad.shape[0], channels, -1).sum(dim=2)
    else:
        step = 1e-5 if dtype == torch.float64 else 1e-3
        with torch.no_grad():
            f = _response(model, _constant_input(model, points, channels))
            up = _response(model, _constant_input(model, points + step, channels))
            down = _response(model, _constant_input(model, points - step, channels))
        df = (up - down) / (2 * step)
    return f.detach().double().cpu().numpy(), df.detach().double().cpu().numpy()


def _varies_by_channel(module: nn.Module) -> bool:
    if not isinstance(module, ActivationModule):
        return False
    return not module.pointwise or (module.scope == "per_channel" and module.spec.learnable)


def sample_curve(
    module_or_config: nn.Module | ActivationConfig | Mapping[str, Any], x: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """f(x) and f′(x) in float64 (per-channel modules: the channel-mean curve, see above)."""
    module = _as_module(module_or_config)
    shape = np.shape(x)
    if _varies_by_channel(module) and isinstance(module, ActivationModule) and module.pointwise:
        module = module.with_mean_parameters()
    f, df = channel_curves(module, x)
    return f.mean(axis=1).reshape(shape), df.mean(axis=1).reshape(shape)


def activation_curves(model: nn.Module, grid: ArrayLike) -> dict[str, dict[str, list[float]]]:
    """Curves of every activation site: {"x", "f", "df"} (+ envelope for per-channel sites)."""
    x = np.asarray(grid, dtype=np.float64).ravel()
    curves: dict[str, dict[str, list[float]]] = {}
    for name, module in activation_sites(model).items():
        f, df = sample_curve(module, x)
        entry = {"x": x.tolist(), "f": f.tolist(), "df": df.tolist()}
        if _varies_by_channel(module):
            fc, dfc = channel_curves(module, x)
            entry |= {
                "f_min": fc.min(axis=1).tolist(),
                "f_max": fc.max(axis=1).tolist(),
                "df_min": dfc.min(axis=1).tolist(),
                "df_max": dfc.max(axis=1).tolist(),
            }
        curves[name] = entry
    return curves


def _first_bad(x: NDArray[np.float64], bad: NDArray[np.bool_]) -> str:
    where = x[bad.any(axis=1) if bad.ndim > 1 else bad]
    return f"x = {where[0]:g}" + (f" (and {len(where) - 1} more points)" if len(where) > 1 else "")


def prescreen(
    config: ActivationConfig | Mapping[str, Any] | nn.Module,
    *,
    f_limit: float = F_LIMIT,
    df_limit: float = DF_LIMIT,
) -> PrescreenResult:
    """Reject a candidate before training: non-finite, exploding, or constant on [-10, 10].

    Evaluated in fp32 (the compute precision of every op) at the initial parameters; a module
    may be given instead of a config.
    """
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PRESCREEN_SEED)
            module = _as_module(config)
    except (ValueError, TypeError) as exc:
        return PrescreenResult(False, f"cannot build: {exc}")
    x = np.linspace(*PRESCREEN_INTERVAL, PRESCREEN_POINTS)
    f, df = channel_curves(module, x, dtype=torch.float32)
    for label, values in (("f", f), ("f′", df)):
        finite = np.isfinite(values)
        if not finite.all():
            return PrescreenResult(False, f"{label} is not finite at {_first_bad(x, ~finite)}")
    if not _parameter_grads_finite(module, x):
        return PrescreenResult(False, "a parameter gradient is not finite on [-10, 10]")
    for label, values, limit in (("f", f, f_limit), ("f′", df, df_limit)):
        peak = float(np.abs(values).max())
        if peak > limit:
            at = x[np.abs(values).max(axis=1).argmax()]
            return PrescreenResult(
                False, f"exploding: max |{label}| = {peak:.3g} > {limit:g} (at x = {at:g})"
            )
    spread = float((f.max(axis=0) - f.min(axis=0)).max())
    if spread < FLAT_LIMIT:
        return PrescreenResult(
            False, f"constant: f varies by {spread:.3g} < {FLAT_LIMIT:g} on [-10, 10]"
        )
    return PrescreenResult(True)


def _parameter_grads_finite(module: nn.Module, x: NDArray[np.float64]) -> bool:
    model = copy.deepcopy(module).float().eval()
    channels = int(getattr(model, "channels", 1))
    inputs = _constant_input(model, torch.as_tensor(x, dtype=torch.float32), channels)
    out = model(inputs)
    if not out.requires_grad:  # no trainable parameters
        return True
    out.sum().backward()
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
