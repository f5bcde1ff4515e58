"""DESIGN.md's import rules, checked in fresh interpreters."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[str]:
    path = ROOT / package
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
        if ".migrations.versions" in info.name or info.name.endswith(".migrations.env"):
            continue  # alembic scripts only run inside alembic
        names.append(info.name)
    return names


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_service_never_imports_torch_or_workers() -> None:
    loaded = _loaded_after_import(_modules("service"))
    assert "torch" not in loaded
    assert not any(name == "workers" or name.startswith("workers.") for name in loaded)


def test_search_space_schema_side_is_torch_free() -> None:
    # Everything the service imports, and the worker's boundary: the contract, the spec, the
    # suggestions, samplers and Optuna access (docs/architecture.md's import rules).
    wanted = [
        "search_space",
        "search_space.registry",
        "search_space.contract",
        "search_space.spec",
        "search_space.suggest",
        "search_space.samplers",
        "search_space.grid_sampler",
        "search_space.optuna_access",
        "search_space.recipes",
        "workers.training",
        "workers.failures",
        "workers.options",
        "workers.trial_runner",
        "workers.attempt",
    ]
    assert "torch" not in _loaded_after_import(wanted)


def test_workers_never_import_the_http_layer() -> None:
    loaded = _loaded_after_import(_modules("workers"))
    forbidden = {"fastapi", "service.app", "service.api", "service.dashboard", "uvicorn"}
    assert not forbidden & loaded, forbidden & loaded
