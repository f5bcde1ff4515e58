"""The activation registry: every family's name, formula, parameters, options, presets and scopes.

Torch-free: the service imports this module. Modules are referenced by dotted path and imported
lazily by `search_space.build`. The mathematics follow docs/ACTIVATIONS.md (shared docs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Scope = Literal["shared", "per_layer", "per_channel"]
ALL_SCOPES: tuple[Scope, ...] = ("shared", "per_layer", "per_channel")

# Targets that PAU / OPAU coefficients can be fitted to (see search_space.fits).
FIT_TARGETS: tuple[str, ...] = ("relu", "leaky_relu", "gelu", "silu", "tanh")
DEFAULT_FIT_TARGET = "leaky_relu"
DEFAULT_FIT_INTERVAL: tuple[float, float] = (-3.0, 3.0)

PAU_FORMS: tuple[str, ...] = ("A", "B", "C", "unsafe")
OPAU_BASES: tuple[str, ...] = (
    "chebyshev_t",
    "chebyshev_u",
    "hermite_h",
    "hermite_he",
    "laguerre",
    "legendre",
)
MAX_DEGREE = 8

# The pre-screen (search_space.curves.prescreen) on [-10, 10] in fp32: a candidate is rejected
# when f or f′ is not finite, |f| > PRESCREEN_F_LIMIT (fp16 overflows at 65504; no useful
# activation reaches 1e3 at |x| = 10), |f′| > PRESCREEN_DF_LIMIT, or max f − min f is below
# PRESCREEN_FLAT_LIMIT (a constant curve).
PRESCREEN_INTERVAL: tuple[float, float] = (-10.0, 10.0)
PRESCREEN_F_LIMIT = 1e3
PRESCREEN_DF_LIMIT = 1e2
PRESCREEN_FLAT_LIMIT = 1e-6

# Positive parameters are stored as log(value) and clamped to this range, so they can never
# reach 0 or infinity (ACTIVATIONS.md §1 traps). Both SMU presets (1e6, 4.33e-9) lie inside.
POSITIVE_MIN = 1e-12
POSITIVE_MAX = 1e12


@dataclass(frozen=True)
class Domain:
    """The set of valid values of one parameter or option."""

    kind: Literal["float", "int", "str", "bool"]
    low: float | None = None  # None = unbounded
    high: float | None = None
    low_open: bool = False  # True: low itself is excluded
    high_open: bool = False
    choices: tuple[str, ...] | None = None  # for kind "str"

    def check(self, value: Any) -> str | None:
        """Return why `value` is outside the domain, or None when it is valid."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
        if self.kind == "str":
            if not isinstance(value, str):
                return f"expected a string, got {value!r}"
            if self.choices is not None and value not in self.choices:
                return f"{value!r} is not one of {', '.join(self.choices)}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        if self.kind == "int" and not isinstance(value, int):
            return f"expected an integer, got {value!r}"
        if not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        if not self.contains(float(value)):
            return f"{value!r} is outside the domain {self}"
        return None

    def contains(self, value: float) -> bool:
        """True when the number lies inside the interval."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )

    def __str__(self) -> str:
        if self.kind == "str":
            return "{" + ", ".join(self.choices or ()) + "}"
        if self.kind == "bool":
            return "{true, false}"
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        low = "-inf" if self.low is None else _short(self.low)
        high = "inf" if self.high is None else _short(self.high)
        return f"{left}{low}, {high}{right}"


def _short(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(value)


REAL = Domain("float")
POSITIVE = Domain("float", low=0.0, low_open=True)
UNIT = Domain("float", low=0.0, high=1.0)


@dataclass(frozen=True)
class SearchRange:
    """Default Optuna range for a numeric parameter when a spec asks to search it."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class ParamSpec:
    """A scalar numeric parameter of a family."""

    default: float
    domain: Domain
    search: SearchRange
    doc: str
    trainable: bool = False  # trainable by default
    can_train: bool = False  # may a spec make it trainable?
    positive: bool = False  # stored in log space when trainable (cannot leave its domain)


@dataclass(frozen=True)
class CoefficientSpec:
    """A trainable coefficient vector (PAU a/b, OPAU c/d); initialised by a fit or a preset."""

    doc: str


@dataclass(frozen=True)
class OptionSpec:
    """A non-numeric or structural choice (form, basis, degree, variant)."""

    default: str | int
    domain: Domain
    doc: str


@dataclass(frozen=True)
class Family:
    """One activation family: what it computes, what can be searched, how it is built."""

    name: str
    title: str
    formula: str
    module_path: str  # "package.module:Class", imported lazily
    docs_url: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    coefficients: dict[str, CoefficientSpec] = field(default_factory=dict)
    options: dict[str, OptionSpec] = field(default_factory=dict)
    scopes: tuple[Scope, ...] = ALL_SCOPES
    default_scope: Scope = "per_layer"
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    head_only: bool = False  # Maxout: changes width, MLP head only
    fit_init: bool = False  # accepts init_target / init_interval (PAU, OPAU)
    polynomial: bool = False  # accepts an input clamp (PAU, OPAU)
    notes: str = ""

    @property
    def learnable(self) -> bool:
        """True when the family has parameters that can train (scope then matters)."""
        return bool(self.coefficients) or any(p.can_train for p in self.params.values())

    @property
    def trainable_names(self) -> tuple[str, ...]:
        """Names accepted in a `trainable` mapping."""
        names = [n for n, p in self.params.items() if p.can_train]
        return (*names, *self.coefficients)

    def default_trainable(self) -> dict[str, bool]:
        """Trainable flags at their defaults."""
        flags = {n: p.trainable for n, p in self.params.items() if p.can_train}
        flags.update({n: True for n in self.coefficients})
        return flags

    def default_params(self) -> dict[str, float]:
        """Numeric parameters at their defaults."""
        return {n: p.default for n, p in self.params.items()}

    def default_options(self) -> dict[str, str | int]:
        """Options at their defaults."""
        return {n: o.default for n, o in self.options.items()}


@dataclass(frozen=True)
class Alias:
    """Another name for a family with some settings fixed (hp1, hp2, silu)."""

    target: str
    options: dict[str, str | int] = field(default_factory=dict)
    params: dict[str, float] = field(default_factory=dict)
    trainable: dict[str, bool] = field(default_factory=dict)
    note: str = ""


_TORCH_DOCS = "https://pytorch.org/docs/stable/generated/torch.nn.{}.html"

# Published LeakyReLU(0.01) fit of PAU form A (5, 4), ACTIVATIONS.md §2.
PAU_REFERENCE_LEAKY_RELU: dict[str, Any] = {
    "form": "A",
    "m": 5,
    "n": 4,
    "a": [3.35583603e-02, 5.05000375e-01, 1.65343934, 2.01001052, 9.31901999e-01, 1.52424124e-01],
    "b": [3.30847488e-06, 3.98021568, 5.12471206e-07, 3.01830109e-01],
}


def _fixed(name: str, title: str, formula: str, module: str, url: str, **kw: Any) -> Family:
    """A family with no trainable parameters (scope is accepted and ignored)."""
    return Family(name, title, formula, f"search_space.modules.{module}", url, **kw)


def _degree(default: int, doc: str) -> OptionSpec:
    return OptionSpec(default, Domain("int", low=1, high=MAX_DEGREE), doc)


_SMU_ALPHA = ParamSpec(
    0.25,
    UNIT,
    SearchRange(0.0, 0.5),
    "slope of the negative side (max(x, αx)); trains unconstrained when trainable",
    trainable=False,
    can_train=True,
)


def _families() -> dict[str, Family]:
    fams = [
        _fixed("relu", "ReLU", "max(0, x)", "standard:ReLU", _TORCH_DOCS.format("ReLU")),
        _fixed(
            "relu6", "ReLU6", "min(max(0, x), 6)", "standard:ReLU6", _TORCH_DOCS.format("ReLU6")
        ),
        _fixed(
            "leaky_relu",
            "LeakyReLU",
            "x if x ≥ 0 else s·x",
            "standard:LeakyReLU",
            _TORCH_DOCS.format("LeakyReLU"),
            params={
                "negative_slope": ParamSpec(
                    0.01, UNIT, SearchRange(0.001, 0.3, log=True), "slope s for x < 0"
                )
            },
        ),
        Family(
            "prelu",
            "PReLU",
            "x if x ≥ 0 else a·x",
            "search_space.modules.standard:PReLU",
            "https://arxiv.org/abs/1502.01852",
            params={
                "a": ParamSpec(
                    0.25,
                    REAL,
                    SearchRange(0.0, 0.5),
                    "initial negative slope (trainable; keep it out of weight decay)",
                    trainable=True,
                    can_train=True,
                )
            },
        ),
        _fixed(
            "rrelu",
            "RReLU",
            "train: x if x ≥ 0 else r·x, r ~ U(l, u) per element; eval: r = (l + u)/2",
            "standard:RReLU",
            "https://arxiv.org/abs/1505.00853",
            params={
                "lower": ParamSpec(0.125, UNIT, SearchRange(0.01, 0.2), "l"),
                "upper": ParamSpec(1.0 / 3.0, UNIT, SearchRange(0.2, 0.5), "u"),
            },
            notes="If a search draws l > u the module uses (min, max) of the two.",
        ),
        _fixed(
            "elu",
            "ELU",
            "x if x > 0 else α(eˣ − 1)",
            "standard:ELU",
            "https://arxiv.org/abs/1511.07289",
            params={"alpha": ParamSpec(1.0, POSITIVE, SearchRange(0.1, 2.0), "α")},
        ),
        _fixed(
            "selu",
            "SELU",
            "λ·(x if x > 0 else α(eˣ − 1)), α = 1.6732632423543772, λ = 1.0507009873554805",
            "standard:SELU",
            "https://arxiv.org/abs/1706.02515",
        ),
        _fixed(
            "celu",
            "CELU",
            "max(0, x) + min(0, α(e^(x/α) − 1))",
            "standard:CELU",
            "https://arxiv.org/abs/1704.07483",
            params={"alpha": ParamSpec(1.0, POSITIVE, SearchRange(0.1, 3.0), "α")},
        ),
        _fixed(
            "softplus",
            "Softplus",
            "(1/β)·log(1 + e^(βx))",
            "standard:Softplus",
            _TORCH_DOCS.format("Softplus"),
            params={"beta": ParamSpec(1.0, POSITIVE, SearchRange(0.5, 10.0, log=True), "β")},
        ),
        _fixed(
            "sigmoid",
            "Sigmoid",
            "1/(1 + e^(−x))",
            "standard:Sigmoid",
            _TORCH_DOCS.format("Sigmoid"),
        ),
        _fixed("tanh", "Tanh", "tanh(x)", "standard:Tanh", _TORCH_DOCS.format("Tanh")),
        _fixed(
            "hsigmoid",
            "H-Sigmoid",
            "ReLU6(x + 3)/6",
            "standard:HSigmoid",
            "https://arxiv.org/abs/1905.02244",
        ),
        _fixed(
            "hswish",
            "H-Swish",
            "x·ReLU6(x + 3)/6",
            "standard:HSwish",
            "https://arxiv.org/abs/1905.02244",
        ),
        _fixed(
            "gelu",
            "GELU",
            "exact: x·Φ(x); tanh: ½x(1 + tanh(√(2/π)(x + 0.044715x³)))",
            "standard:GELU",
            "https://arxiv.org/abs/1606.08415",
            options={
                "approximate": OptionSpec(
                    "none", Domain("str", choices=("none", "tanh")), "exact (none) or tanh"
                )
            },
        ),
        Family(
            "swish",
            "Swish",
            "x·σ(βx)",
            "search_space.modules.swish:Swish",
            "https://arxiv.org/abs/1710.05941",
            params={
                "beta": ParamSpec(
                    1.0,
                    POSITIVE,
                    SearchRange(0.25, 4.0, log=True),
                    "β (β = 1 is SiLU); positive, stored in log space",
                    trainable=True,
                    can_train=True,
                    positive=True,
                )
            },
        ),
        _fixed(
            "mish",
            "Mish",
            "x·tanh(softplus(x))",
            "standard:Mish",
            "https://arxiv.org/abs/1908.08681",
        ),
        Family(
            "acon_c",
            "ACON-C",
            "(p1 − p2)·x·σ(β(p1 − p2)x) + p2·x",
            "search_space.modules.acon:AconC",
            "https://arxiv.org/abs/2009.04759",
            params={
                "p1": ParamSpec(1.0, REAL, SearchRange(0.5, 1.5), "p1", True, True),
                "p2": ParamSpec(0.0, REAL, SearchRange(-0.5, 0.5), "p2", True, True),
                "beta": ParamSpec(1.0, REAL, SearchRange(0.5, 2.0), "β", True, True),
            },
            default_scope="per_channel",
            notes="Defaults p1 = 1, p2 = 0, β = 1 start as Swish (the reference code draws p1, p2 "
            "at random; a deterministic start keeps trials comparable).",
        ),
        Family(
            "meta_acon",
            "Meta-ACON",
            "ACON-C with β = σ(W₂·(W₁·mean_hw(x) + b₁) + b₂) per sample and channel",
            "search_space.modules.acon:MetaAcon",
            "https://arxiv.org/abs/2009.04759",
            params={
                "p1": ParamSpec(1.0, REAL, SearchRange(0.5, 1.5), "p1", True, True),
                "p2": ParamSpec(0.0, REAL, SearchRange(-0.5, 0.5), "p2", True, True),
            },
            options={
                "r": OptionSpec(
                    16, Domain("int", low=1, high=64), "reduction: hidden width max(r, C // r)"
                )
            },
            scopes=("per_channel",),
            default_scope="per_channel",
            notes="W₁, W₂ are 1×1 convolutions (no BN, no nonlinearity between, as in "
            "ACTIVATIONS.md). Its curve is the response to a spatially constant input.",
        ),
        Family(
            "frelu",
            "FReLU",
            "max(x, BN(depthwise_conv3×3(x)))",
            "search_space.modules.frelu:FReLU",
            "https://arxiv.org/abs/2007.11824",
            scopes=("per_channel",),
            default_scope="per_channel",
            notes="Its conv and BN weights are ordinary layer weights (weight decay applies). "
            "Its curve is the response at the centre of a spatially constant 3×3 input; "
            "activation_parameters reports the per-channel affine map s·x + t that the "
            "conv+BN (eval) applies to such an input.",
        ),
        _fixed(
            "maxout",
            "Maxout",
            "y_c = max_{j<k} x_{k·c + j}: max over k linear pieces from a k× wider layer",
            "maxout:Maxout",
            "https://arxiv.org/abs/1302.4389",
            options={"k": OptionSpec(2, Domain("int", low=2, high=8), "pieces per unit")},
            head_only=True,
            notes="Changes width: `factory(C)` returns a module that maps k·C features to C. A "
            "model builder widens the Linear before it by `factory.width_factor` (= k) and "
            "uses it at MLP-head sites only; the spec accepts it only for models with an MLP "
            "head (spec.MLP_HEAD_MODELS). The pieces' weights live in that Linear.",
        ),
        Family(
            "smu",
            "SMU",
            "½[(1 + α)x + (1 − α)·x·erf(μ(1 − α)x)]",
            "search_space.modules.smu:SMU",
            "https://arxiv.org/abs/2111.04682",
            params={
                "alpha": _SMU_ALPHA,
                "mu": ParamSpec(
                    1.0,
                    POSITIVE,
                    SearchRange(0.5, 5.0, log=True),
                    "smoothing μ (μ → ∞: LeakyReLU(α)); stored in log space",
                    trainable=True,
                    can_train=True,
                    positive=True,
                ),
            },
            presets={
                "classification": {"alpha": 0.25, "mu": 1.0},
                "detection": {"alpha": 0.01, "mu": 2.5},
                "early_code": {"alpha": 0.25, "mu": 1e6},
                "later_code": {"alpha": 0.01, "mu": 2.5},
            },
            notes="α = 0, μ = 1/√2 is exactly GELU. Preset early_code (μ = 1e6) is LeakyReLU(0.25) "
            "in fp32 with ∂f/∂μ = 0: a trainable μ does not move from it.",
        ),
        Family(
            "smu1",
            "SMU-1",
            "½[(1 + α)x + √((1 − α)²x² + μ²)]",
            "search_space.modules.smu:SMU1",
            "https://arxiv.org/abs/2111.04682",
            params={
                "alpha": _SMU_ALPHA,
                "mu": ParamSpec(
                    1.0,
                    POSITIVE,
                    SearchRange(0.01, 2.0, log=True),
                    "smoothing μ (μ → 0: LeakyReLU(α)); f(0) = μ/2; stored in log space",
                    trainable=True,
                    can_train=True,
                    positive=True,
                ),
            },
            presets={
                "classification": {"alpha": 0.25, "mu": 1.0},
                "early_code": {"alpha": 0.25, "mu": 4.352665993287951e-9},
                "later_code": {"alpha": 0.01, "mu": 4.332461424154261e-9},
            },
            notes="Defaults follow ACTIVATIONS.md's classification default (stated for SMU; the "
            "sources give no separate SMU-1 value). The square root is computed as "
            "hypot((1 − α)x, μ), so it never underflows; with the code presets (μ ≈ 4e-9) "
            "SMU-1 is LeakyReLU(α) except within ~1e-8 of 0.",
        ),
        Family(
            "pau",
            "PAU",
            "P(x)/Q(x), P = Σ_{j≤m} a_j x^j; Q by form — A: 1 + Σ_{k≤n} |b_k||x|^k; "
            "B: 1 + |Σ_{k≤n} b_k x^k|; C: 0.1 + |Σ_{k=0..n} b_k x^k|; unsafe: 1 + Σ b_k x^k",
            "search_space.modules.pau:PAU",
            "https://arxiv.org/abs/1907.06732",
            coefficients={
                "a": CoefficientSpec("numerator a_0..a_m"),
                "b": CoefficientSpec("denominator b_1..b_n (form C: b_0..b_n)"),
            },
            options={
                "m": _degree(5, "numerator degree"),
                "n": _degree(4, "denominator degree"),
                "form": OptionSpec(
                    "A",
                    Domain("str", choices=PAU_FORMS),
                    "denominator form; 'unsafe' has poles and is opt-in only",
                ),
            },
            presets={"reference_leaky_relu": PAU_REFERENCE_LEAKY_RELU},
            fit_init=True,
            polynomial=True,
            notes="Initialised by a least-squares fit (search_space/fit_tables.json). Denominator "
            "coefficients that are exactly 0 are set to 1e-7 at build time: |b| has gradient 0 "
            "at b = 0 under autograd, so a zero would never train. Form-A fits hold the odd-power "
            "b_k at 0 (smooth at x = 0, like the published set; see search_space.fits).",
        ),
        Family(
            "opau",
            "Orthogonal-Padé (OPAU)",
            "[c_0 + Σ_{i=1..k} c_i f_i(x)] / [1 + Σ_{j=1..l} |d_j|·|f_j(x)|], {f_i} an "
            "orthogonal polynomial basis",
            "search_space.modules.opau:OPAU",
            "https://arxiv.org/abs/2106.09693",
            coefficients={
                "c": CoefficientSpec("numerator c_0..c_k"),
                "d": CoefficientSpec("denominator d_1..d_l"),
            },
            options={
                "basis": OptionSpec(
                    "hermite_h", Domain("str", choices=OPAU_BASES), "orthogonal basis"
                ),
                "k": _degree(5, "numerator degree"),
                "l": _degree(4, "denominator degree"),
            },
            fit_init=True,
            polynomial=True,
            notes="Piecewise smooth: |f_j| has a kink at every real root of f_j. Zero d_j are set "
            "to 1e-7 at build time (same trap as PAU).",
        ),
    ]
    return {f.name: f for f in fams}


FAMILIES: dict[str, Family] = _families()

ALIASES: dict[str, Alias] = {
    "hp1": Alias(
        "opau",
        options={"basis": "hermite_h"},
        note="HP-1 of the OPAU paper, mapped to physicists' Hermite H; the mapping could not be "
        "verified against the paper's text.",
    ),
    "hp2": Alias(
        "opau",
        options={"basis": "hermite_he"},
        note="HP-2 of the OPAU paper, mapped to probabilists' Hermite He; the mapping could not be "
        "verified against the paper's text.",
    ),
    "silu": Alias(
        "swish",
        params={"beta": 1.0},
        trainable={"beta": False},
        note="Swish with β = 1 fixed.",
    ),
}


def family_names(include_aliases: bool = True) -> list[str]:
    """All valid family names (and aliases), in registry order."""
    names = list(FAMILIES)
    return [*names, *ALIASES] if include_aliases else names


def get_family(name: str) -> Family:
    """Return the family for a name or alias; unknown names raise ValueError listing valid ones."""
    key = name.lower() if isinstance(name, str) else name
    if key in FAMILIES:
        return FAMILIES[key]
    if key in ALIASES:
        return FAMILIES[ALIASES[key].target]
    raise ValueError(
        f"unknown activation family {name!r}; valid names: {', '.join(family_names())}"
    )


def get_alias(name: str) -> Alias | None:
    """The alias record for a name, or None when the name is a family itself."""
    return ALIASES.get(name.lower())


def resolve_settings(
    name: str,
    params: Mapping[str, float] | None = None,
    options: Mapping[str, str | int] | None = None,
    trainable: Mapping[str, bool] | None = None,
    preset: str | None = None,
) -> tuple[Family, dict[str, float], dict[str, str | int], dict[str, bool]]:
    """Defaults ← preset ← alias ← given values, for one family; raises ValueError on bad names."""
    family = get_family(name)
    alias = get_alias(name)
    values = family.default_params()
    opts = family.default_options()
    flags = family.default_trainable()
    if preset is not None:
        if preset not in family.presets:
            raise ValueError(
                f"{family.name} has no preset {preset!r}; presets: "
                f"{', '.join(family.presets) or 'none'}"
            )
        chosen = family.presets[preset]
        values.update({k: float(v) for k, v in chosen.items() if k in family.params})
        opts.update({k: v for k, v in chosen.items() if k in family.options})
    if alias is not None:
        values.update(alias.params)
        opts.update(alias.options)
        flags.update(alias.trainable)
        _check_alias(name, alias, params, options, trainable)
    for kind, given, known in (
        ("parameter", params, family.params),
        ("option", options, family.options),
        ("trainable flag", trainable, {**family.params, **family.coefficients}),
    ):
        unknown = sorted(set(given or {}) - set(known))
        if unknown:
            raise ValueError(
                f"{family.name} has no {kind} {', '.join(map(repr, unknown))}; valid: "
                f"{', '.join(known) or 'none'}"
            )
    for key, value in {**(params or {}), **(options or {})}.items():
        spec = family.params.get(key) or family.options.get(key)
        why = spec.domain.check(value) if spec is not None else None
        if why:
            raise ValueError(f"{family.name} {key}: {why}")
    for key, flag in (trainable or {}).items():
        if flag and key not in flags:
            raise ValueError(f"{family.name}'s {key} cannot be trainable")
    values.update({k: float(v) for k, v in (params or {}).items()})
    opts.update(options or {})
    flags.update({k: v for k, v in (trainable or {}).items() if k in flags})
    return family, values, opts, flags


def _check_alias(
    name: str,
    alias: Alias,
    params: Mapping[str, float] | None,
    options: Mapping[str, str | int] | None,
    trainable: Mapping[str, bool] | None,
) -> None:
    """An alias fixes some settings; a different given value is an error, not an override."""
    for fixed, given in (
        (alias.params, params),
        (alias.options, options),
        (alias.trainable, trainable),
    ):
        for key, value in fixed.items():
            if given and key in given and given[key] != value:
                raise ValueError(
                    f"{name} is {alias.target} with {key}={value!r} fixed; got {given[key]!r}"
                )
