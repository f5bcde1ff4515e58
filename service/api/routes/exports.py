"""Exports of a study's trials (CSV, JSON) and its per-family leaderboard (JSON, CSV, LaTeX)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from service.api.deps import CurrentUser, StoreDep
from service.api.routes.studies import StudyId
from service.api.schemas import (
    Leaderboard,
    LeaderboardRow,
    StudyExport,
    TrialExport,
    error_responses,
)
from service.api.views import study_detail
from service.store.queries import RANKING, LeaderRow, export_trials, leaderboard
from service.store.queries import study_detail as load_study_detail

router = APIRouter(tags=["exports"])

CSV_FIELDS = (
    "run_id", "number", "attempt", "retry_of", "state", "family", "value", "value_std",
    "test_acc", "epochs_done", "duration_s", "img_per_s", "peak_mem_bytes", "failure_reason",
    "failure_epoch", "worker_id", "created_at", "started_at", "finished_at",
)  # fmt: skip


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


def trials_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV of trials: fixed columns, then one `param.<name>` column per parameter seen."""
    names = sorted({name for row in rows for name in (row.get("params") or {})})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_FIELDS, *(f"param.{n}" for n in names)])
    for row in rows:
        params = row.get("params") or {}
        writer.writerow(
            [_cell(row.get(f)) for f in CSV_FIELDS] + [_cell(params.get(n)) for n in names]
        )
    return out.getvalue()


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}
}


@router.get(
    "/studies/{study_id}/export.csv",
    response_class=Response,
    responses={**CSV_RESPONSE, **error_responses(401, 404, 422)},
)
def export_csv(study_id: StudyId, store: StoreDep, _user: CurrentUser) -> Response:
    """Every trial (attempt) of a study as CSV, one column per parameter."""
    text = trials_csv(export_trials(store.db, study_id))
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="study-{study_id}-trials.csv"'},
    )


@router.get(
    "/studies/{study_id}/export.json",
    response_model=StudyExport,
    responses=error_responses(401, 404, 422),
)
def export_json(study_id: StudyId, store: StoreDep, _user: CurrentUser) -> StudyExport:
    """A study (with its spec and summary) and every trial with params and resolved config."""
    study = study_detail(load_study_detail(store.db, study_id))
    trials = [TrialExport.model_validate(row) for row in export_trials(store.db, study_id)]
    return StudyExport(study=study, trials=trials)


def _fmt(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def leaderboard_csv(rows: Iterable[LeaderRow]) -> str:
    """The leaderboard as CSV, in rank order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fields = (
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
    writer.writerow(fields)
    for row in rows:
        writer.writerow([_cell(getattr(row, f)) for f in fields])
    return out.getvalue()


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def leaderboard_latex(rows: Iterable[LeaderRow], baseline: str) -> str:
    """The leaderboard as a booktabs LaTeX table in rank order (mean ± std, best, Δ mean)."""
    lines = [
        r"\begin{tabular}{lrrrr}",
        r"\toprule",
        rf"Activation & $n$ & Mean $\pm$ std & Best & $\Delta$ vs {_latex_escape(baseline)} \\",
        r"\midrule",
    ]
    for row in rows:
        spread = _fmt(row.mean) + (rf" $\pm$ {_fmt(row.std)}" if row.std is not None else "")
        delta = "---" if row.is_baseline else _fmt(row.delta_vs_baseline, signed=True)
        lines.append(
            rf"{_latex_escape(row.family)} & {row.n} & {spread} & {_fmt(row.best)} & {delta} \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


@router.get(
    "/studies/{study_id}/leaderboard",
    response_model=Leaderboard,
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-latex": {"schema": {"type": "string"}},
            },
            "description": "the leaderboard as JSON, CSV or LaTeX (see `format`)",
        },
        **error_responses(401, 404, 422),
    },
)
def get_leaderboard(
    study_id: StudyId,
    store: StoreDep,
    _user: CurrentUser,
    format: Annotated[Literal["json", "csv", "latex"], Query()] = "json",
) -> Any:
    """Activation families with a complete trial, ranked by their best value (then mean).

    Columns: n, mean ± std, median, best (its trial, test accuracy), mean test accuracy, and Δ
    mean / Δ best against the baseline family. The dashboard ranks the same way.
    """
    board = leaderboard(store.db, study_id)
    rows = [row for row in board.rows if row.n]  # families without a complete trial: not here
    if format == "csv":
        return Response(leaderboard_csv(rows), media_type="text/csv; charset=utf-8")
    if format == "latex":
        return Response(leaderboard_latex(rows, board.baseline), media_type="application/x-latex")
    return Leaderboard(
        study_id=study_id,
        baseline=board.baseline,
        ranked_by=board.ranked_by,
        ranking=RANKING,
        rows=[LeaderboardRow.model_validate(row) for row in rows],
    )
