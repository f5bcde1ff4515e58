"""The table of activation families and aliases: names, formulas, parameters, presets, scopes.

Data only (the types are `search_space.family_types`, the lookups `search_space.registry`).
Torch-free: modules are referenced by dotted path and imported lazily by `search_space.build`.
The mathematics follow docs/ACTIVATIONS.md (shared docs).
"""

from __future__ import annotations

from typing import Any

from search_space.domain import POSITIVE, REAL, UNIT, Domain
from search_space.family_types import (
    Alias,
    CoefficientSpec,
    Family,
    OptionSpec,
    ParamSpec,
    SearchRange,
)

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
