"""Every shape a study's leaderboard and trials leave in: CSV, LaTeX and JSON-ready rows.

The API, the dashboard and the CLI (which downloads the API's) all go through here, so one
study exports as the same bytes wherever it is asked for. Accuracies are fractions in [0, 1].
No web framework here: callers wrap the text in their own responses.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from service.store.queries.leaderboard import RANKING, LeaderboardView, LeaderRow

TableFormat = Literal["csv", "latex"]


@dataclass(frozen=True)
class Download:
    """An export: its text, media type and the file name it is saved under."""

    text: str
    media_type: str
    filename: str


MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "latex": "application/x-latex"}
SUFFIXES: dict[str, str] = {"csv": "csv", "latex": "tex"}


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


# -- trials --------------------------------------------------------------------------------------
TRIAL_CSV_FIELDS = (
    "run_id", "number", "attempt", "retry_of", "state", "family", "value", "value_std",
    "test_acc", "epochs_done", "duration_s", "img_per_s", "peak_mem_bytes", "failure_reason",
    "failure_epoch", "worker_id", "created_at", "started_at", "finished_at",
)  # fmt: skip


def trials_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV of trials: fixed columns, then one `param.<name>` column per parameter seen."""
    names = sorted({name for row in rows for name in (row.get("params") or {})})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*TRIAL_CSV_FIELDS, *(f"param.{n}" for n in names)])
    for row in rows:
        params = row.get("params") or {}
        writer.writerow(
            [_cell(row.get(f)) for f in TRIAL_CSV_FIELDS] + [_cell(params.get(n)) for n in names]
        )
    return out.getvalue()


def trials_download(study_id: int, rows: Sequence[dict[str, Any]]) -> Download:
    """Every trial of a study as a CSV file."""
    return Download(trials_csv(rows), MEDIA_TYPES["csv"], f"study-{study_id}-trials.csv")


# -- leaderboard -------------------------------------------------------------------------------
LEADERBOARD_CSV_FIELDS = (
    "family",
    "n",
    "mean",
    "std",
    "best",
    "best_number",
    "mean_test_acc",
    "delta_vs_baseline",
    "is_baseline",
    # added later, so that earlier columns keep their places
    "rank",
    "median",
    "best_test_acc",
    "delta_best_vs_baseline",
)


def leaderboard_csv(board: LeaderboardView) -> str:
    """The leaderboard's rows as CSV, in rank order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LEADERBOARD_CSV_FIELDS)
    for row in board.scored:
        writer.writerow([_cell(getattr(row, f)) for f in LEADERBOARD_CSV_FIELDS])
    return out.getvalue()


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell."""
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def _fixed(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _latex_line(row: LeaderRow) -> str:
    spread = _fixed(row.mean) + (rf" $\pm$ {_fixed(row.std)}" if row.std is not None else "")
    delta = "---" if row.is_baseline else _fixed(row.delta_vs_baseline, signed=True)
    return rf"{latex_escape(row.family)} & {row.n} & {spread} & {_fixed(row.best)} & {delta} \\"


def leaderboard_latex(board: LeaderboardView) -> str:
    """The leaderboard as a booktabs LaTeX table in rank order (mean ± std, best, Δ mean)."""
    lines = [
        r"\begin{tabular}{lrrrr}",
        r"\toprule",
        rf"Activation & $n$ & Mean $\pm$ std & Best & $\Delta$ vs {latex_escape(board.baseline)} \\",
        r"\midrule",
        *(_latex_line(row) for row in board.scored),
        r"\bottomrule",
        r"\end{tabular}",
        "",
    ]
    return "\n".join(lines)


def leaderboard_download(board: LeaderboardView, fmt: TableFormat) -> Download:
    """The leaderboard as a CSV or LaTeX file."""
    text = leaderboard_csv(board) if fmt == "csv" else leaderboard_latex(board)
    return Download(text, MEDIA_TYPES[fmt], f"study-{board.study_id}-leaderboard.{SUFFIXES[fmt]}")


def leaderboard_rows(board: LeaderboardView) -> list[dict[str, Any]]:
    """The leaderboard's rows as JSON-ready mappings (every LeaderRow field), in rank order."""
    return [dataclasses.asdict(row) for row in board.scored]


# -- the dashboard's study summary ---------------------------------------------------------------
def _summary_row(row: LeaderRow) -> dict[str, Any]:
    return {
        "family": row.family,
        "rank": row.rank,
        "n_complete": row.n,
        "states": row.states,
        "best": row.best,
        "best_trial": row.best_number,
        "best_std": row.best_std,
        "best_test_acc": row.best_test_acc,
        "mean": row.mean,
        "std": row.std,
        "median": row.median,
        "is_baseline": row.is_baseline,
        "delta_best": row.delta_best_vs_baseline,
        "delta_mean": row.delta_vs_baseline,
    }


def _headline_side(row: LeaderRow) -> dict[str, Any]:
    return {
        "family": row.family,
        "trial": row.best_number,
        "value": row.best,
        "value_std": row.best_std,
        "family_mean": row.mean,
        "family_std": row.std,
        "n": row.n,
    }


def _headline(board: LeaderboardView) -> dict[str, Any] | None:
    """The best trial overall against the baseline family's best (and their families' spread)."""
    leader, base = board.leader, board.baseline_row
    if leader is None:
        return None
    return {
        **_headline_side(leader),
        "baseline": None if base is None or base.best is None else _headline_side(base),
        "delta": leader.delta_best_vs_baseline,
        "delta_mean": leader.delta_vs_baseline,
    }


def study_summary(board: LeaderboardView) -> dict[str, Any]:
    """The dashboard's summary: every family with an attempt (per-state counts) and the headline."""
    return {
        "baseline": board.baseline,
        "ranked_by": board.ranked_by,
        "ranking": RANKING,
        "families": [_summary_row(row) for row in board.rows],
        "headline": _headline(board),
    }
