"""Common machinery of every activation module: one constructor shape, parameter storage, scopes.

Every module is built as `Cls(channels, params=..., options=..., scope=..., trainable=...,
clamp=...)`; missing values come from the family's registry defaults. Scalar parameters are stored
as tensors shaped () for `shared`/`per_layer` scope and (C,) for `per_channel` (broadcast over
dim 1 of (N, C, ...) inputs). Positive parameters are stored as log(value) and clamped, so they can
never leave (0, ∞); their value is exp(log) computed in fp32, also after `module.half()`.
`module.fn` is the forward function `(x, *constrained params) -> y`: the fp32-wrapped reference
in `search_space.modules.functional`. On CUDA the fused kernels of `search_space.kernels`
replace it where they cover the family and options (`module.fused_kernel`, chosen once when the
module is built); `forward` hands them the stored tensors (log-stored ones included: the kernel
applies the clamp and exp itself).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from search_space import kernels as fused
from search_space.contract import ResolvedActivation
from search_space.registry import (
    POSITIVE_MAX,
    POSITIVE_MIN,
    Family,
    ParamSpec,
    get_family,
    resolve_settings,
)

from .functional import Kernel

LOG_MIN = math.log(POSITIVE_MIN)
LOG_MAX = math.log(POSITIVE_MAX)

ParamValues = Mapping[str, float | Sequence[float]]


@dataclass(frozen=True)
class _Stored:
    attr: str  # attribute holding the tensor (a Parameter when trainable, else a buffer)
    positive: bool  # stored as log(value)
    vector: bool  # leading coefficient index (PAU a/b, OPAU c/d)
    first_index: int = 0  # index of the first coefficient in user-facing names (b1, b2, ...)


def _identity_kernel(x: Tensor, *params: Tensor) -> Tensor:
    return x


class ActivationModule(nn.Module):
    """Base class of all activation modules (same constructor shape for every family)."""

    family: ClassVar[str] = ""
    # f(x) depends on each element alone; FReLU and Meta-ACON look at neighbours / the map mean.
    pointwise: ClassVar[bool] = True
    # Output channel c depends on input channel c only (Meta-ACON's β mixes channels).
    channel_separable: ClassVar[bool] = True
    width_factor: int = 1  # Maxout consumes k·C features and returns C

    def __init__(
        self,
        channels: int = 1,
        *,
        params: ParamValues | None = None,
        options: Mapping[str, str | int] | None = None,
        scope: str | None = None,
        trainable: Mapping[str, bool] | None = None,
        clamp: float | None = None,
        resolved: ResolvedActivation | None = None,
    ) -> None:
        super().__init__()
        if resolved is None:  # built directly: defaults, checks
            spec_family = _family_of(type(self))
            scalars = {k: v for k, v in (params or {}).items() if k not in spec_family.coefficients}
            family, values, opts, flags = resolve_settings(
                self.family, _as_floats(scalars), options, trainable
            )
        else:  # resolved once, when the trial's ActivationConfig was validated
            family, values = resolved.family, resolved.params
            opts, flags = resolved.options, resolved.trainable
        self.spec: Family = family
        self.channels = int(channels)
        if self.channels < 1:
            raise ValueError(f"channels must be ≥ 1, got {channels}")
        self.scope = scope or family.default_scope
        if self.scope not in family.scopes:
            raise ValueError(
                f"{family.name} supports scopes {', '.join(family.scopes)}, not {self.scope!r}"
            )
        if clamp is not None and not (family.polynomial and clamp > 0):
            raise ValueError(f"{family.name} takes no input clamp (only PAU/OPAU, clamp > 0)")
        self.clamp = clamp
        self.options: dict[str, str | int] = dict(opts)
        self.trainable: dict[str, bool] = dict(flags)
        self.initial: dict[str, float] = dict(values)  # initial values (fixed ones stay so)
        self._stored: dict[str, _Stored] = {}
        for name, pspec in family.params.items():
            self._add_scalar(name, values[name], pspec, bool(flags.get(name, False)))
        self.fn: Kernel = self.make_kernel()
        # Fused Triton kernels (search_space.kernels) replace `fn` on CUDA where they cover the
        # family; set False to force the reference path on this module.
        self.allow_fused = True
        self.setup(params)
        # Chosen once: it depends on the family, options and storage only, never on the input
        # (`forward` still checks the input's device, which can change after construction).
        self.fused_kernel: Kernel | None = fused.module_kernel(
            self.family,
            self.options,
            log_scale=[s.positive for s in self._stored.values()],
            log_bounds=(LOG_MIN, LOG_MAX),
        )

    def setup(self, params: ParamValues | None) -> None:
        """Family-specific parts built after the common ones (coefficients, layers, width)."""

    def make_kernel(self) -> Kernel:
        """The forward function (x, *kernel_args) -> y; subclasses return their reference."""
        return _identity_kernel

    # -- parameter storage -------------------------------------------------------------------
    def _channel_shape(self, trainable: bool) -> tuple[int, ...]:
        return (self.channels,) if trainable and self.scope == "per_channel" else ()

    def _add_scalar(self, name: str, value: float, spec: ParamSpec, trainable: bool) -> None:
        positive = spec.positive
        if positive:
            value = min(max(value, POSITIVE_MIN), POSITIVE_MAX)
        raw = math.log(value) if positive else value
        tensor = torch.full(self._channel_shape(trainable), raw, dtype=torch.float32)
        self._store(name, tensor, trainable, positive=positive, vector=False)

    def _add_vector(
        self, name: str, values: Sequence[float], trainable: bool, first_index: int = 0
    ) -> None:
        base = torch.tensor([float(v) for v in values], dtype=torch.float32)
        shape = self._channel_shape(trainable)
        tensor = base.reshape(-1, *([1] * len(shape))).repeat(1, *shape).contiguous()
        self._store(name, tensor, trainable, positive=False, vector=True, first_index=first_index)

    def _store(
        self,
        name: str,
        tensor: Tensor,
        trainable: bool,
        *,
        positive: bool,
        vector: bool,
        first_index: int = 0,
    ) -> None:
        attr = f"log_{name}" if positive else name
        if trainable:
            self.register_parameter(attr, nn.Parameter(tensor))
        else:
            self.register_buffer(attr, tensor)
        self._stored[name] = _Stored(attr, positive, vector, first_index)

    def value(self, name: str) -> Tensor:
        """The constrained (user-facing) value of a parameter: μ itself, not log μ."""
        stored = self._stored[name]
        raw: Tensor = getattr(self, stored.attr)
        if not stored.positive:
            return raw
        # exp in fp32 (fp64 stays fp64): after `module.half()` log μ is fp16, where exp
        # overflows above μ ≈ 65504 and flushes μ below ≈ 6e-8 to 0 (the fused kernels read the
        # stored log in fp32 too)
        if raw.dtype != torch.float64:
            raw = raw.float()
        return raw.clamp(LOG_MIN, LOG_MAX).exp()

    def broadcast(self, name: str, x: Tensor) -> Tensor:
        """The parameter shaped to broadcast against x (channels on dim 1)."""
        value = self.value(name)
        lead = 1 if self._stored[name].vector else 0
        if value.dim() == lead:
            return value
        trailing = [1] * max(x.dim() - 2, 0)
        return value.reshape(*value.shape[:lead], -1, *trailing)

    def kernel_param_names(self) -> list[str]:
        """Names of the parameters `kernel_args` passes, in order."""
        return list(self._stored)

    def kernel_args(self, x: Tensor) -> list[Tensor]:
        """Arguments after x of `self.fn`, in the order the reference function takes them."""
        return [self.broadcast(name, x) for name in self._stored]

    def forward(self, x: Tensor) -> Tensor:
        if self.clamp is not None:
            x = x.clamp(-self.clamp, self.clamp)
        stored_kernel = self.fused_stored_kernel(x)
        if stored_kernel is not None:
            # The stored tensors as they are (log μ, log β): the fused kernels apply the clamp +
            # exp and its gradient themselves, so the step issues no torch ops for them.
            return stored_kernel(x, *[getattr(self, s.attr) for s in self._stored.values()])
        return self.fn(x, *self.kernel_args(x))

    def fused_stored_kernel(self, x: Tensor) -> Kernel | None:
        """The fused kernel `forward` runs on x, taking (x, *stored tensors); None when the
        kernels do not cover this module, `allow_fused` is False or x is not on a device the
        kernels run on (then `forward` runs `fn`)."""
        if self.fused_kernel is None or not self.allow_fused or not fused.available(x):
            return None
        return self.fused_kernel

    # -- scopes, records, curves -------------------------------------------------------------
    def share_from(self, other: ActivationModule) -> None:
        """Use `other`'s trainable Parameter objects (scope `shared`: one set per network)."""
        for stored in self._stored.values():
            source = getattr(other, stored.attr)
            if isinstance(source, nn.Parameter):
                setattr(self, stored.attr, source)

    def parameter_values(self) -> dict[str, list[float]]:
        """Constrained values per parameter (a list over channels; coefficients as a0, a1, ...)."""
        out: dict[str, list[float]] = {}
        for name, stored in self._stored.items():
            value = self.value(name).detach().double().cpu()
            if stored.vector:
                for j in range(value.shape[0]):
                    out[f"{name}{j + stored.first_index}"] = value[j].flatten().tolist()
            else:
                out[name] = value.flatten().tolist()
        return out

    def trainable_tensors(self) -> list[nn.Parameter]:
        """The activation's own trainable parameters (kept out of weight decay)."""
        return [
            p
            for s in self._stored.values()
            if isinstance(p := getattr(self, s.attr), nn.Parameter) and p.requires_grad
        ]

    def with_mean_parameters(self) -> ActivationModule:
        """A copy whose per-channel parameters are replaced by their channel mean."""
        clone = copy.deepcopy(self)
        for name, stored in clone._stored.items():
            raw = getattr(clone, stored.attr)
            lead = 1 if stored.vector else 0
            if raw.dim() == lead:
                continue
            mean = clone.value(name).detach().mean(dim=-1)
            new = (mean.log() if stored.positive else mean).to(raw.dtype)
            if isinstance(raw, nn.Parameter):
                setattr(clone, stored.attr, nn.Parameter(new))
            else:
                setattr(clone, stored.attr, new)
        clone.scope = "per_layer"
        return clone

    def extra_repr(self) -> str:
        parts = [f"channels={self.channels}"]
        if self.spec.learnable:
            parts.append(f"scope={self.scope}")
        parts += [f"{k}={v}" for k, v in self.options.items()]
        if self.clamp is not None:
            parts.append(f"clamp={self.clamp}")
        return ", ".join(parts)


def _family_of(cls: type[ActivationModule]) -> Family:
    return get_family(cls.family)


def _as_floats(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        if isinstance(v, (list, tuple)):
            raise ValueError(f"parameter {k!r} takes one number, got a list")
        out[k] = float(v)
    return out
