"""No module of the runtime packages grows past 600 lines (issue 16): split it by concern first."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "search_space", "workers")
MAX_LINES = 600


def test_no_runtime_module_is_over_600_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert len(sizes) > 100  # the packages were found
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines, split by concern: {too_long}"
