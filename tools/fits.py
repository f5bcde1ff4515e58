"""Recompute `search_space/fit_tables.json`, the shipped least-squares fits of PAU and OPAU.

`python -m tools.fits [--output PATH]` fits every tabulated setting (`search_space.fits`:
TABLE_FORMS, OPAU_BASES, TABLE_DEGREES, FIT_TARGETS on the default interval) and writes them as
JSON; it takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from search_space import fits

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Recompute the fit tables and write them as JSON."""
    parser = argparse.ArgumentParser(prog="python -m tools.fits", description=__doc__)
    parser.add_argument("--output", type=Path, default=fits.TABLE_PATH, help="where to write JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tables = fits.build_tables()
    args.output.write_text(json.dumps(tables, indent=1) + "\n", encoding="utf-8")
    worst = max(
        (entry["max_abs"], f"{fam} {variant} {deg} {target}")
        for fam in ("pau", "opau")
        for variant, by_degree in tables[fam].items()
        for deg, by_target in by_degree.items()
        for target, entry in by_target.items()
    )
    log.info("wrote %s; worst max-abs error %.4g (%s)", args.output, *worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
