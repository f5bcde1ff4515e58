"""Generate docs/activations.md (the family registry) and docs/spec.md (the study spec).

`python -m tools.docs` writes both; `--check` fails when either is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from search_space.fits import TABLE_PATH
from search_space.registry import (
    ALIASES,
    ALL_SCOPES,
    DEFAULT_FIT_INTERVAL,
    FAMILIES,
    FIT_TARGETS,
    OPAU_BASES,
    POSITIVE_MAX,
    POSITIVE_MIN,
    PRESCREEN_DF_LIMIT,
    PRESCREEN_F_LIMIT,
    PRESCREEN_FLAT_LIMIT,
    Family,
)
from tools import spec_docs

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "activations.md"

HEADER = """\
# Activation families

Generated from `search_space/families.py` by `python -m tools.docs`; do not edit by hand
(a test checks this file equals the generated text). The mathematics follow
`../shared/docs/ACTIVATIONS.md`.

## How the families are built
- One constructor shape: `Cls(channels, params=..., options=..., scope=..., trainable=...,
  clamp=...)`; model builders call `ActivationFactory(config)(channels)` once per site.
- Scope (families with trainable parameters only; others ignore it): `shared` — one parameter
  set for the whole network (every site holds the same Parameter objects); `per_layer` — one set
  per site; `per_channel` — shape (C,), broadcast over dim 1 of (N, C, ...) or (N, C) inputs.
- Numerics: every op computes in fp32 (fp64 stays fp64) and returns the input dtype, under
  autocast too. Positive parameters are stored as log(value), clamped to
  [{pmin:g}, {pmax:g}], so they never reach 0 or ∞.
- Reference forward functions live in `search_space.modules.functional` (one per learnable
  family, `(x, *params)` with params already broadcast-shaped) and are each module's `fn`; on
  CUDA the fused kernels of `search_space.kernels` replace them where they cover the family,
  taking the stored tensors and applying the clamp and exp of log-stored ones themselves
  (`module.allow_fused = False` keeps the reference path).
- Learned values (`activation_parameters(model)`) are the constrained values (μ, not log μ),
  one list per parameter over channels; coefficient vectors are reported as a0, a1, ... / b1, ...
- PAU / OPAU start from a least-squares fit to `init_target` (default leaky_relu) on
  `init_interval` (default [{lo:g}, {hi:g}]); see the fit table below and `search_space/fits.py`.
- Curves (`search_space.curves`): f and f′ per site; a `per_channel` site gives the curve of
  its channel-mean parameters plus the min/max envelope over channels. The pre-screen rejects
  a candidate whose f or f′ is not finite on [-10, 10] (fp32), whose |f| exceeds {f_limit:g} or
  |f′| exceeds {df_limit:g} there, or whose f varies by less than {flat:g} (constant).

## In a study spec
Each key of `activations` is a family name or alias; its entry holds the family's parameters
and options (a value, `{{low, high, log?, step?}}` or `{{choices: [...]}}`) plus `scope`,
`trainable` (name → bool), `preset`, and for PAU/OPAU `init_target`, `init_interval`, `clamp`:

```yaml
activations:
  smu: {{alpha: {{low: 0.0, high: 0.5}}, mu: {{low: 0.5, high: 5.0, log: true}}, trainable: {{alpha: true}}}}
  pau: {{form: {{choices: [A, B]}}, m: 5, n: 4, init_target: gelu}}
  hp1: {{k: 5, l: 4}}
```
Searched values become Optuna parameters named `<family>.<name>` (e.g. `smu.alpha`), chosen
per trial with the categorical `activation`.
"""


def _family_section(family: Family) -> list[str]:
    lines = [f"## `{family.name}` — {family.title}", "", f"f(x) = {family.formula}", ""]
    if family.params:
        lines += [
            "| parameter | default | domain | search range | trainable | |",
            "|---|---|---|---|---|---|",
        ]
        for name, p in family.params.items():
            search = f"[{p.search.low:g}, {p.search.high:g}]" + (" log" if p.search.log else "")
            trainable = ("yes" if p.trainable else "can be") if p.can_train else "no"
            lines.append(
                f"| `{name}` | {p.default:g} | {p.domain} | {search} | {trainable} | {p.doc} |"
            )
        lines.append("")
    if family.coefficients:
        for name, c in family.coefficients.items():
            lines.append(f"- coefficients `{name}`: {c.doc} (trainable by default)")
        lines.append("")
    if family.options:
        lines += ["| option | default | values | |", "|---|---|---|---|"]
        for name, o in family.options.items():
            lines.append(f"| `{name}` | {o.default} | {o.domain} | {o.doc} |")
        lines.append("")
    scopes = (
        "ignored (no trainable parameters)"
        if not family.learnable and family.scopes == ALL_SCOPES
        else f"{', '.join(family.scopes)} (default {family.default_scope})"
    )
    lines.append(f"- scopes: {scopes}")
    if family.presets:
        lines.append("- presets:")
        for name, values in family.presets.items():
            lines.append(f"  - `{name}`: {_preset_text(values)}")
    if family.fit_init:
        lines.append(f"- init_target: {', '.join(FIT_TARGETS)}; init_interval; clamp")
    if family.head_only:
        lines.append("- head only (MLP heads; changes width)")
    if family.notes:
        lines.append(f"- notes: {family.notes}")
    lines += [f"- module: `{family.module_path}`", f"- reference: {family.docs_url}", ""]
    return lines


def _preset_text(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        if isinstance(value, list):
            parts.append(f"{key} = [{', '.join(f'{v:.9g}' for v in value)}]")
        else:
            parts.append(f"{key} = {value}")
    return ", ".join(parts)


def _alias_section() -> list[str]:
    lines = ["## Aliases", "", "| alias | family | fixed | note |", "|---|---|---|---|"]
    for name, alias in ALIASES.items():
        fixed = {
            **alias.options,
            **alias.params,
            **{f"trainable.{k}": v for k, v in alias.trainable.items()},
        }
        text = ", ".join(f"{k} = {v}" for k, v in fixed.items())
        lines.append(f"| `{name}` | `{alias.target}` | {text} | {alias.note} |")
    return [*lines, ""]


def _fit_section() -> list[str]:
    if not TABLE_PATH.exists():
        return []
    tables = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    lo, hi = tables["interval"]
    lines = [
        f"## Initial fits at the default degrees (max abs error on [{lo:g}, {hi:g}])",
        "",
        f"All tabulated degrees (m, n): {', '.join(tables['pau']['A'])}; others are fitted on "
        "demand. Form-A fits keep odd-power denominator terms at 0 (smooth at x = 0).",
        "",
        "| variant | " + " | ".join(FIT_TARGETS) + " |",
        "|---|" + "---|" * len(FIT_TARGETS),
    ]
    rows = [("pau", form, "5,4") for form in tables["pau"]]
    rows += [("opau", basis, "5,4") for basis in OPAU_BASES]
    for family, variant, degree in rows:
        entries = tables[family][variant][degree]
        errors = " | ".join(f"{entries[t]['max_abs']:.2g}" for t in FIT_TARGETS)
        lines.append(f"| {family} {variant} ({degree}) | {errors} |")
    return [*lines, ""]


def render() -> str:
    """The full text of docs/activations.md."""
    lo, hi = DEFAULT_FIT_INTERVAL
    lines = [
        HEADER.format(
            pmin=POSITIVE_MIN,
            pmax=POSITIVE_MAX,
            lo=lo,
            hi=hi,
            f_limit=PRESCREEN_F_LIMIT,
            df_limit=PRESCREEN_DF_LIMIT,
            flat=PRESCREEN_FLAT_LIMIT,
        )
    ]
    lines.append("## Families\n")
    lines.append(", ".join(f"`{name}`" for name in FAMILIES) + "\n")
    for family in FAMILIES.values():
        lines += _family_section(family)
    lines += _alias_section()
    lines += _fit_section()
    return "\n".join(lines).rstrip() + "\n"


# Every generated document: its file name under docs/ and the function that renders it.
GENERATED: dict[str, Callable[[], str]] = {
    DOC_PATH.name: render,
    spec_docs.DOC_PATH.name: spec_docs.render,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with --check, compare) every generated document."""
    parser = argparse.ArgumentParser(prog="python -m tools.docs", description=__doc__)
    parser.add_argument("--docs-dir", type=Path, default=DOC_PATH.parent, help="default: docs/")
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, render_doc in GENERATED.items():
        path, text = args.docs_dir / name, render_doc()
        if not args.check:
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
    for path in stale:
        sys.stderr.write(f"{path} is out of date: run python -m tools.docs\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
