"""Registry contract, torch-free imports, generated docs, and the fit tables."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from activation_reference import REFERENCES

from search_space import fits
from search_space.build import ActivationFactory, module_class
from search_space.modules.base import ActivationModule
from search_space.registry import (
    ALIASES,
    ALL_SCOPES,
    FAMILIES,
    FIT_TARGETS,
    OPAU_BASES,
    PAU_REFERENCE_LEAKY_RELU,
    family_names,
    get_family,
)
from tools import docs
from tools import fits as fits_cli


def test_registry_is_a_lowercase_dict_and_unknown_names_list_the_valid_ones() -> None:
    assert isinstance(FAMILIES, dict)
    for name, family in FAMILIES.items():
        assert name == name.lower() == family.name
        assert family.default_scope in family.scopes and set(family.scopes) <= set(ALL_SCOPES)
        assert family.docs_url.startswith("https://")
    assert set(ALIASES).isdisjoint(FAMILIES)
    assert get_family("SMU").name == "smu" and get_family("silu").name == "swish"
    with pytest.raises(ValueError) as info:
        get_family("swishy")
    assert all(name in str(info.value) for name in family_names())


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_module_has_the_same_constructor_shape(name: str) -> None:
    cls = module_class(FAMILIES[name])
    assert issubclass(cls, ActivationModule) and cls.family == name
    parameters = inspect.signature(cls.__init__).parameters
    assert list(parameters) == [
        "self",
        "channels",
        "params",
        "options",
        "scope",
        "trainable",
        "clamp",
        "resolved",  # the factory's: the family as the trial's config resolved it, once
    ]
    module = cls(3)  # every default comes from the registry
    assert module.channels == 3 and module.options == FAMILIES[name].default_options()


def test_search_ranges_and_defaults_lie_in_their_domains() -> None:
    for family in FAMILIES.values():
        for pname, p in family.params.items():
            assert p.domain.check(p.default) is None, (family.name, pname)
            assert p.domain.contains(p.search.low) and p.domain.contains(p.search.high)
            assert p.search.low < p.search.high
            assert not p.trainable or p.can_train
        for oname, o in family.options.items():
            assert o.domain.check(o.default) is None, (family.name, oname)
        for preset in family.presets.values():
            assert set(preset) <= {*family.params, *family.options, *family.coefficients}


def test_registry_spec_and_suggest_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import search_space, search_space.registry, search_space.spec, search_space.suggest\n"
        "import tools.docs\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[2]  # tools/ is importable from the repo root
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=root)


def test_docs_file_is_generated_from_the_registry() -> None:
    assert docs.DOC_PATH.read_text(encoding="utf-8") == docs.render(), (
        "docs/activations.md is stale: run python -m tools.docs"
    )
    text = docs.render()
    for name in [*FAMILIES, *ALIASES]:
        assert f"`{name}`" in text
    assert docs.main(["--check"]) == 0


def test_fit_tables_cover_every_tabulated_setting() -> None:
    tables = fits.load_tables()
    assert tables["interval"] == [-3.0, 3.0]
    x = np.linspace(-3, 3, 601)
    for form in fits.TABLE_FORMS:
        for m, n in fits.TABLE_DEGREES:
            for target in FIT_TARGETS:
                entry = tables["pau"][form][f"{m},{n}"][target]
                assert len(entry["a"]) == m + 1 and len(entry["b"]) == n + (form == "C")
                assert 0 <= entry["rms"] <= entry["max_abs"] < 0.15
                values = fits.pau_value(x, entry["a"], entry["b"], form)
                assert np.abs(values - fits.TARGETS[target](x)).max() == pytest.approx(
                    entry["max_abs"], rel=1e-6
                )
    for basis in OPAU_BASES:
        for k, dl in fits.TABLE_DEGREES:
            for target in FIT_TARGETS:
                entry = tables["opau"][basis][f"{k},{dl}"][target]
                assert len(entry["c"]) == k + 1 and len(entry["d"]) == dl
                assert 0 <= entry["rms"] <= entry["max_abs"] < 0.15


def test_numpy_fit_model_agrees_with_the_test_reference() -> None:
    x = np.linspace(-5, 5, 101)
    for form in ("A", "B", "C", "unsafe"):
        b = [0.3, 0.0, 0.02] if form != "C" else [1.0, 0.3, 0.0, 0.02]
        p = {"a": [0.1, 0.5, 0.3, 0.05], "b": b}
        expected, _, _ = REFERENCES["pau"](x, p, {"form": form})
        np.testing.assert_allclose(fits.pau_value(x, p["a"], p["b"], form), expected, rtol=1e-12)
    for basis in OPAU_BASES:
        p = {"c": [0.1, 0.5, 0.3, 0.05], "d": [0.3, 0.1]}
        expected, _, _ = REFERENCES["opau"](x, p, {"basis": basis})
        np.testing.assert_allclose(fits.opau_value(x, p["c"], p["d"], basis), expected, rtol=1e-10)


def test_leaky_relu_fit_reproduces_the_published_coefficients() -> None:
    fit = fits.fit_pau("leaky_relu", 5, 4, "A")
    x = np.linspace(-3, 3, 1201)
    published = fits.pau_value(x, PAU_REFERENCE_LEAKY_RELU["a"], PAU_REFERENCE_LEAKY_RELU["b"], "A")
    ours = fits.pau_value(x, fit.coefficients["a"], fit.coefficients["b"], "A")
    assert np.abs(ours - published).max() < 1e-3
    table = fits.load_tables()["pau"]["A"]["5,4"]["leaky_relu"]
    assert np.abs(fits.pau_value(x, table["a"], table["b"], "A") - published).max() < 1e-3
    # Without the smooth-denominator restriction the optimum has a kink at 0 and a lower error.
    free = fits.fit_pau("leaky_relu", 5, 4, "A", smooth_denominator=False)
    assert free.rms < fit.rms


def test_untabulated_settings_are_fitted_on_demand_and_cached() -> None:
    first = fits.initial_coefficients("pau", "B", 4, 3, "gelu")
    assert fits.initial_coefficients("pau", "B", 4, 3, "gelu") is first
    x = np.linspace(-3, 3, 301)
    error = np.abs(fits.pau_value(x, first["a"], first["b"], "B") - fits.TARGETS["gelu"](x)).max()
    assert error < 0.01
    module = ActivationFactory(
        {"family": "opau", "options": {"basis": "legendre", "k": 2, "l": 1}}
    )(1)
    assert len(module.parameter_values()) == 3 + 1
    with pytest.raises(ValueError, match="fit target"):
        fits.fit_pau("softsign", 5, 4)


def test_fits_cli_writes_json(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fits, "TABLE_FORMS", ("B",))
    monkeypatch.setattr(fits, "OPAU_BASES", ("legendre",))
    monkeypatch.setattr(fits, "FIT_TARGETS", ("tanh",))
    monkeypatch.setattr(fits, "TABLE_DEGREES", ((2, 1),))
    out = tmp_path / "tables.json"  # type: ignore[operator]
    assert fits_cli.main(["--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["pau"]) == {"B"} and set(data["opau"]) == {"legendre"}
