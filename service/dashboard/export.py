"""Paper-ready exports of a study's family leaderboard: CSV and a LaTeX (booktabs) table."""

from __future__ import annotations

import csv
import io
from typing import Any

CSV_COLUMNS = (
    "family",
    "baseline",
    "n_complete",
    "best_val_acc",
    "best_trial",
    "best_test_acc",
    "mean_val_acc",
    "std_val_acc",
    "median_val_acc",
    "delta_best_vs_baseline",
    "delta_mean_vs_baseline",
    "pruned",
    "failed",
)


def _num(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def leaderboard_csv(board: dict[str, Any]) -> str:
    """One row per family; accuracies as fractions in [0, 1], empty where undefined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in board["families"]:
        writer.writerow(
            [
                row["family"],
                int(row["is_baseline"]),
                row["n_complete"],
                _num(row["best"]),
                "" if row["best_trial"] is None else row["best_trial"],
                _num(row["best_test_acc"]),
                _num(row["mean"]),
                _num(row["std"]),
                _num(row["median"]),
                _num(row["delta_best"]),
                _num(row["delta_mean"]),
                row["states"].get("pruned", 0),
                row["states"].get("failed", 0),
            ]
        )
    return out.getvalue()


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


def _pct(value: float | None) -> str:
    return "--" if value is None else f"{100 * value:.2f}"


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "--"
    if std is None:
        return _pct(mean)
    return f"{_pct(mean)} $\\pm$ {_pct(std)}"


def _signed(delta: float | None) -> str:
    return "--" if delta is None else f"{100 * delta:+.2f}"


def leaderboard_latex(board: dict[str, Any], study_name: str) -> str:
    """A booktabs table (accuracies in %), best value in bold; needs \\usepackage{booktabs}."""
    rows = board["families"]
    best = max((r["best"] for r in rows if r["best"] is not None), default=None)
    baseline = board.get("baseline")
    lines = [
        "% needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{Validation accuracy (\\%) per activation family, study "
        f"``{latex_escape(study_name)}''"
        + (f"; $\\Delta$ against {latex_escape(baseline)}" if baseline else "")
        + ".}",
        "\\begin{tabular}{lrrrrr}",
        "\\toprule",
        "Family & $n$ & Best & Mean $\\pm$ std & Test (best) & $\\Delta$ best \\\\",
        "\\midrule",
    ]
    for row in rows:
        best_cell = _pct(row["best"])
        if row["best"] is not None and row["best"] == best:
            best_cell = f"\\textbf{{{best_cell}}}"
        name = latex_escape(row["family"]) + (" (baseline)" if row["is_baseline"] else "")
        cells = [
            name,
            str(row["n_complete"]),
            best_cell,
            _mean_std(row["mean"], row["std"]),
            _pct(row["best_test_acc"]),
            _signed(row["delta_best"]),
        ]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)
