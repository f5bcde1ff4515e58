"""What the `actsearch` CLI prints: studies, family evidence, tables of studies, users and workers.

Plain text from the API's JSON; no server module is imported here (the CLI stays quick to start).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from service.client import field_lines


def progress_counts(study: dict[str, Any]) -> tuple[int, int, str]:
    """(finished trials, budget, "running 2 · best 0.9123 (smu)") of a study."""
    progress = study.get("progress") or {}
    finished = sum(int(progress.get(k, 0)) for k in ("complete", "pruned", "failed", "cancelled"))
    running = int(progress.get("running", 0))
    best = study.get("best") or {}
    label = f"running {running}"
    if best.get("value") is not None:
        label += f" · best {best['value']:.4f} ({best.get('family', '?')})"
    return finished, int(study.get("n_trials", 0)), label


def duration(seconds: float) -> str:
    """ "42s", "3m07s", "2h05m": a time span to read."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def live_progress(progress: dict[str, Any] | None) -> str:
    """A running trial's progress inside its epoch: "epoch 2/10 · step 120/391 · 63 img/s · ETA
    4m10s" ("" when the worker has reported none yet)."""
    if not progress:
        return ""
    parts = []
    if progress.get("phase") and progress.get("phase") != "train":
        parts.append(str(progress["phase"]))
    if progress.get("epoch") is not None and progress.get("epochs"):
        parts.append(f"epoch {int(progress['epoch']) + 1}/{progress['epochs']}")
    if progress.get("step") is not None and progress.get("steps"):
        parts.append(f"step {progress['step']}/{progress['steps']}")
    if progress.get("img_per_s"):
        parts.append(f"{float(progress['img_per_s']):,.0f} img/s")
    if progress.get("eta_s") is not None:
        parts.append(f"ETA {duration(float(progress['eta_s']))}")
    return " · ".join(parts)


def print_study(study: dict[str, Any], board: dict[str, Any] | None = None) -> None:
    """A readable summary of one study, with its families' evidence when `board` (the API's
    leaderboard) is given."""
    finished, total, label = progress_counts(study)
    print(
        f"study {study['id']} · {study['name']} · {study['status']} · {finished}/{total} trials"
        f" · {label}"
    )
    if study.get("error"):  # why it failed, or why it completed short of its budget
        print(f"  note: {study['error']}")
    if study.get("confirms"):
        print(f"  confirms study {study['confirms']['id']} ({study['confirms']['name']})")
    for confirm in study.get("confirmed_by") or []:
        print(f"  confirmed by study {confirm['id']} ({confirm['status']})")
    if board is not None:
        for line in family_table(board):
            print(line)


def print_warnings(warnings: Sequence[dict[str, Any]], where: str = "", file: Any = None) -> None:
    """A spec's warnings (settings its budget contradicts), on stderr unless `file` says."""
    for line in field_lines(list(warnings)):
        print(f"warning: {where}{line}", file=file or sys.stderr)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _interval(low: float | None, high: float | None, points: bool = False) -> str:
    if low is None or high is None:
        return ""
    if points:
        return f" [{100 * low:+.2f}, {100 * high:+.2f}]"
    return f" [{100 * low:.2f}, {100 * high:.2f}]"


def _family_line(row: dict[str, Any], confirmed: bool) -> str:
    """One family: n, mean [95 % CI], Δ [95 % CI] in points, verdict (and p after Holm)."""
    c = row.get("confirmation") if confirmed else row["search"]
    if c is None:
        return f"  {row['family']:<12} {0:>4}  {'—':<26} {'—':<28} not in the confirm study"
    mean = _percent(c["mean"]) + _interval(c["ci_low"], c["ci_high"])
    if row["is_baseline"] or c["delta"] is None or c["verdict"] == "too few runs":
        delta = "—"
    else:
        points = _interval(c["delta_ci_low"], c["delta_ci_high"], points=True)
        delta = f"{100 * c['delta']:+.2f} pp{points}"
    verdict = c["verdict"] + (f" (p={c['p_value']:.3g})" if c["p_value"] is not None else "")
    return f"  {row['family']:<12} {c['trainings']:>4}  {mean:<26} {delta:<28} {verdict}"


def family_table(board: dict[str, Any]) -> list[str]:
    """The leaderboard's families as text: which trainings back the numbers, then a table."""
    confirm_id = board.get("confirmation_study_id")
    if confirm_id is not None:
        source = "this study" if confirm_id == board["study_id"] else f"study {confirm_id}"
        what = f"confirmation by {source}: fresh seeds, test accuracy"
    else:
        what = (
            "search-time, validation accuracy: 'promising' at most; "
            f"`actsearch confirm {board['study_id']}` re-trains the best with fresh seeds"
        )
    delta = f"Δ vs {board['baseline']} [95% CI]"
    header = f"  {'family':<12} {'n':>4}  {'mean [95% CI]':<26} {delta:<28} verdict"
    rows = [_family_line(row, confirm_id is not None) for row in board.get("rows") or []]
    return [f"  evidence: {what}", header, *rows]


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns under one header line, each as wide as its widest cell."""
    cells = [[str(c) for c in header], *[[("—" if c is None else str(c)) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def studies_table(items: Sequence[dict[str, Any]]) -> list[str]:
    """The study list: one header, one line per study."""
    rows = []
    for study in items:
        finished, total, label = progress_counts(study)
        rows.append(
            [study["id"], study["status"], f"{finished}/{total}", study["owner"], study["name"],
             label]
        )  # fmt: skip
    return table(["id", "status", "trials", "owner", "name", "progress"], rows)


def users_table(users: Sequence[Any]) -> list[str]:
    """Users (API mappings or store records): id, name, admin."""

    def get(user: Any, key: str) -> Any:
        return user[key] if isinstance(user, dict) else getattr(user, key)

    rows = [[get(u, "id"), get(u, "name"), "admin" if get(u, "is_admin") else ""] for u in users]
    return table(["id", "name", "role"], rows)


def workers_table(workers: Sequence[dict[str, Any]]) -> list[str]:
    """Workers: what each trains, how fast, and whether it still heartbeats."""
    rows = []
    for w in workers:
        trial = (
            f"{w['current_study_id']}/{w['current_trial_number']}"
            if w.get("current_study_id") is not None
            else ""
        )
        rate = f"{w['img_per_s']:,.0f}" if w.get("img_per_s") else ""
        state = str(w["status"]) + (" (stale)" if w.get("stale") else "")
        rows.append(
            [w["id"], w["hostname"], w["device"], state, trial, rate,
             f"{float(w['heartbeat_age_s']):.0f}s", live_progress(w.get("progress"))]
        )  # fmt: skip
    return table(
        ["worker", "host", "device", "status", "study/trial", "img/s", "heartbeat", "progress"],
        rows,
    )
