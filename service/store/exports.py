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

from service.evidence import BETTER, PROMISING, TOO_FEW, WORSE
from service.store.queries.evidence import Comparison
from service.store.queries.leaderboard import EVIDENCE, RANKING, LeaderboardView, LeaderRow
from service.store.queries.pareto import ParetoView

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


# A multi-objective study's trials also carry these (flag_front); others' CSV is unchanged.
COST_CSV_FIELDS = ("cost", "cost_kind", "cost_device", "on_front")


def flag_front(rows: Sequence[dict[str, Any]], view: ParetoView) -> list[dict[str, Any]]:
    """The trial rows of a study with a cost objective, each with `on_front` (its Pareto
    front: service.store.queries.pareto); a single-objective study's rows as they are."""
    if view.cost_kind is None:
        return list(rows)
    front = {point.run_id for point in view.front}
    return [{**row, "on_front": row["run_id"] in front} for row in rows]


def trials_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV of trials: fixed columns (and the cost columns of a multi-objective study's, see
    flag_front), then one `param.<name>` column per parameter seen."""
    names = sorted({name for row in rows for name in (row.get("params") or {})})
    fields: tuple[str, ...] = TRIAL_CSV_FIELDS
    if any("on_front" in row for row in rows):
        fields += COST_CSV_FIELDS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*fields, *(f"param.{n}" for n in names)])
    for row in rows:
        params = row.get("params") or {}
        writer.writerow([_cell(row.get(f)) for f in fields] + [_cell(params.get(n)) for n in names])
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
    # the evidence (docs/evidence.md): trainings, intervals, Holm-adjusted p-values, verdicts
    "trainings",
    "search_mean",
    "search_ci_low",
    "search_ci_high",
    "search_delta",
    "search_delta_ci_low",
    "search_delta_ci_high",
    "search_p_holm",
    "search_verdict",
    "confirm_study_id",
    "confirm_trainings",
    "confirm_test_mean",
    "confirm_test_ci_low",
    "confirm_test_ci_high",
    "confirm_val_mean",
    "confirm_delta",
    "confirm_delta_ci_low",
    "confirm_delta_ci_high",
    "confirm_p_holm",
    "confirm_verdict",
    "verdict",
)
COMPARISON_CSV_FIELDS = {
    "mean": "mean", "ci_low": "ci_low", "ci_high": "ci_high", "delta": "delta",
    "delta_ci_low": "delta_ci_low", "delta_ci_high": "delta_ci_high", "p_holm": "p_value",
    "verdict": "verdict",
}  # fmt: skip


def _csv_values(row: LeaderRow) -> dict[str, Any]:
    """Every CSV column of a row: its own fields, then its comparisons' under a prefix."""
    values: dict[str, Any] = {f: getattr(row, f) for f in LEADERBOARD_CSV_FIELDS[:14]}
    values["verdict"] = row.verdict
    for column, attribute in COMPARISON_CSV_FIELDS.items():
        values[f"search_{column}"] = getattr(row.search, attribute)
    confirmed = row.confirmation
    if confirmed is not None:
        values |= {
            "confirm_study_id": confirmed.study_id,
            "confirm_trainings": confirmed.trainings,
            "confirm_test_mean": confirmed.mean,
            "confirm_test_ci_low": confirmed.ci_low,
            "confirm_test_ci_high": confirmed.ci_high,
            "confirm_val_mean": confirmed.val_mean,
        }
        for column in ("delta", "delta_ci_low", "delta_ci_high", "p_holm", "verdict"):
            values[f"confirm_{column}"] = getattr(confirmed, COMPARISON_CSV_FIELDS[column])
    return values


def leaderboard_csv(board: LeaderboardView) -> str:
    """The leaderboard's rows as CSV, in rank order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LEADERBOARD_CSV_FIELDS)
    for row in board.scored:
        values = _csv_values(row)
        writer.writerow([_cell(values.get(f)) for f in LEADERBOARD_CSV_FIELDS])
    return out.getvalue()


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip
MARKS = {PROMISING: r"$^{\dagger}$", BETTER: r"$^{*}$", WORSE: r"$^{*}$"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell."""
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def _fixed(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _percent(value: float | None, signed: bool = False) -> str:
    """A fraction in percent (or a difference in points), two decimals."""
    return "" if value is None else _fixed(100 * value, 2, signed)


def _mean_cell(c: Comparison | None) -> str:
    """mean ± the 95 % interval's half-width, in percent (the mean alone below two)."""
    if c is None or c.mean is None:
        return "---"
    if c.ci_low is None or c.ci_high is None:
        return _percent(c.mean)
    return rf"{_percent(c.mean)} $\pm$ {_percent((c.ci_high - c.ci_low) / 2)}"


def _delta_cell(row: LeaderRow, c: Comparison | None) -> str:
    """Δ ± the Welch interval's half-width in points, marked when significant."""
    if row.is_baseline:
        return "---"
    if c is None or c.verdict == TOO_FEW or c.delta is None:
        return TOO_FEW
    text = _percent(c.delta, signed=True)
    if c.delta_ci_low is not None and c.delta_ci_high is not None:
        text += rf" $\pm$ {_percent((c.delta_ci_high - c.delta_ci_low) / 2)}"
    return text + MARKS.get(c.verdict, "")


def _latex_line(row: LeaderRow, confirmed: bool) -> str:
    c = row.confirmation if confirmed else row.search
    n = c.trainings if c is not None else 0
    if confirmed:
        beside = "---" if c is None or c.val_mean is None else _percent(c.val_mean)
    else:
        beside = _percent(row.best)
    cells = [latex_escape(row.family), str(n), _mean_cell(c), beside, _delta_cell(row, c)]
    return " & ".join(cells) + r" \\"


def _legend(board: LeaderboardView, confirmed: bool) -> list[str]:
    note = r"\multicolumn{5}{l}{\footnotesize %s} \\"
    if confirmed:
        return [
            note
            % (
                rf"$n$ trainings of confirm study {board.confirmation_study_id} (fresh seeds); "
                r"mean $\pm$ half-width of the 95\,\% CI; test accuracy."
            ),
            note
            % (
                rf"$^{{*}}$ better or worse than {latex_escape(board.baseline)}: Welch "
                rf"$p \le {board.alpha:g}$ after Holm's correction."
            ),
        ]
    return [
        note
        % (
            rf"$n$ trainings of search study {board.study_id}; mean $\pm$ half-width of the "
            r"95\,\% CI; validation accuracy."
        ),
        note
        % (
            rf"$^{{\dagger}}$ promising: Welch $p \le {board.alpha:g}$ after Holm's correction; "
            r"search-time "
            r"gains are optimistic until confirmed."
        ),
    ]


def leaderboard_latex(board: LeaderboardView) -> str:
    """The leaderboard as a booktabs LaTeX table in rank order: per family its trainings, mean
    ± 95 % CI half-width and Δ vs the baseline in points, significance marked; the confirm
    study's fresh seeds on test accuracy when there are any, else the search on validation."""
    confirmed = board.confirmation_study_id is not None
    accuracy, beside = (
        (r"Test acc.\ (\%)", r"Val.\ acc.\ (\%)") if confirmed
        else (r"Val.\ acc.\ (\%)", r"Best (\%)")
    )  # fmt: skip
    lines = [
        r"\begin{tabular}{lrrrr}",
        r"\toprule",
        rf"Activation & $n$ & {accuracy} & {beside} & $\Delta$ vs {latex_escape(board.baseline)}"
        r" (pp) \\",
        r"\midrule",
        *(_latex_line(row, confirmed) for row in board.scored),
        r"\bottomrule",
        *_legend(board, confirmed),
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
def _comparison(c: Comparison | None) -> dict[str, Any] | None:
    return None if c is None else dataclasses.asdict(c)


def _summary_row(row: LeaderRow) -> dict[str, Any]:
    return {
        "family": row.family,
        "rank": row.rank,
        "n_complete": row.n,
        "trainings": row.trainings,
        "states": row.states,
        "best": row.best,
        "best_trial": row.best_number,
        "best_test_acc": row.best_test_acc,
        "mean": row.search.mean,  # over trainings, validation accuracy
        "median": row.median,
        "is_baseline": row.is_baseline,
        "delta_best": row.delta_best_vs_baseline,
        "search": _comparison(row.search),
        "confirmation": _comparison(row.confirmation),
        "verdict": row.verdict,
    }


def _headline_side(row: LeaderRow) -> dict[str, Any]:
    return {
        "family": row.family,
        "trial": row.best_number,
        "value": row.best,
        "family_mean": row.search.mean,
        "family_ci": [row.search.ci_low, row.search.ci_high],
        "n": row.trainings,
    }


def _headline(board: LeaderboardView) -> dict[str, Any] | None:
    """The best trial overall against the baseline family's best, and the leading family's
    evidence (its mean and Δ with their intervals, its verdict)."""
    leader, base = board.leader, board.baseline_row
    if leader is None:
        return None
    evidence = leader.evidence
    return {
        **_headline_side(leader),
        "baseline": None if base is None or base.best is None else _headline_side(base),
        "delta": leader.delta_best_vs_baseline,
        "evidence": _comparison(evidence),
        "verdict": leader.verdict,
    }


def study_summary(board: LeaderboardView) -> dict[str, Any]:
    """The dashboard's summary: every family with an attempt (per-state counts, evidence) and
    the headline."""
    return {
        "baseline": board.baseline,
        "ranked_by": board.ranked_by,
        "ranking": RANKING,
        "evidence": EVIDENCE,
        "alpha": board.alpha,
        "confirms": board.confirms,
        "confirmed_by": board.confirmed_by,
        "confirmation_study_id": board.confirmation_study_id,
        "families": [_summary_row(row) for row in board.rows],
        "headline": _headline(board),
    }
