"""Read-only queries behind the dashboard's charts: aggregates the REST API does not serve.

Every function takes the store's `Database`, opens one short transaction and returns plain
data ready for JSON. Large columns (`record`, `config`) are never read here.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.routes.exports import baseline_family
from service.db import Epoch, Run, Study
from service.store import Database, NotFound

RUN_STATES = ("queued", "running", "complete", "pruned", "failed", "cancelled")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# -- families: leaderboard and headline --------------------------------------------------------
def _spread(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std, statistics.median(values)


@dataclass
class _FamilyRows:
    values: list[float]
    best: tuple[float, int | None, float | None, float | None] | None  # value, number, std, test
    states: dict[str, int]


def _family_rows(session: Session, study_id: int) -> dict[str, _FamilyRows]:
    rows = session.execute(
        select(Run.family, Run.state, Run.value, Run.trial_number, Run.value_std, Run.test_acc)
        .where(Run.study_id == study_id, Run.trial_number.is_not(None))
    ).all()
    families: dict[str, _FamilyRows] = {}
    for family, state, value, number, std, test in rows:
        entry = families.setdefault(
            family or "?", _FamilyRows([], None, dict.fromkeys(RUN_STATES, 0))
        )
        entry.states[state] = entry.states.get(state, 0) + 1
        value = _finite(value)
        if state != "complete" or value is None:
            continue
        entry.values.append(value)
        if entry.best is None or value > entry.best[0]:
            entry.best = (value, number, std, test)
    return families


def leaderboard(db: Database, study_id: int) -> dict[str, Any]:
    """Per-family statistics of complete trials, best first, with Δ against the baseline."""
    with db.session() as session:
        study = session.get(Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        spec = study.spec
        families = _family_rows(session, study_id)
    baseline = baseline_family(spec)
    table: list[dict[str, Any]] = []
    for name, entry in families.items():
        mean, std, median = _spread(entry.values)
        best = entry.best
        table.append(
            {
                "family": name,
                "n_complete": len(entry.values),
                "states": entry.states,
                "best": best[0] if best else None,
                "best_trial": best[1] if best else None,
                "best_std": best[2] if best else None,
                "best_test_acc": best[3] if best else None,
                "mean": mean,
                "std": std,
                "median": median,
            }
        )
    table.sort(key=lambda r: (r["best"] is None, -(r["best"] or 0.0), r["family"]))
    base_row = next((r for r in table if r["family"] == baseline), None)
    for row in table:
        row["is_baseline"] = row["family"] == baseline
        row["delta_best"] = _delta(row["best"], base_row["best"] if base_row else None)
        row["delta_mean"] = _delta(row["mean"], base_row["mean"] if base_row else None)
    return {"baseline": baseline, "families": table, "headline": _headline(table, base_row)}


def _delta(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def _headline(table: list[dict[str, Any]], base: dict[str, Any] | None) -> dict[str, Any] | None:
    """Best trial overall against the baseline family's best (and their families' spread)."""
    best = next((r for r in table if r["best"] is not None), None)
    if best is None:
        return None
    return {
        "family": best["family"],
        "trial": best["best_trial"],
        "value": best["best"],
        "value_std": best["best_std"],
        "family_mean": best["mean"],
        "family_std": best["std"],
        "n": best["n_complete"],
        "baseline": None
        if base is None or base["best"] is None
        else {
            "family": base["family"],
            "trial": base["best_trial"],
            "value": base["best"],
            "value_std": base["best_std"],
            "family_mean": base["mean"],
            "family_std": base["std"],
            "n": base["n_complete"],
        },
        "delta": _delta(best["best"], base["best"] if base else None),
        "delta_mean": _delta(best["mean"], base["mean"] if base else None),
    }


# -- per-trial values (history, distributions, parameters) ------------------------------------
def trial_values(db: Database, study_id: int) -> dict[str, Any]:
    """Column arrays of every finished-or-running trial: number, family, state, value."""
    with db.session() as session:
        rows = session.execute(
            select(Run.trial_number, Run.family, Run.state, Run.value)
            .where(Run.study_id == study_id, Run.trial_number.is_not(None))
            .order_by(Run.trial_number)
        ).all()
    return {
        "number": [r.trial_number for r in rows],
        "family": [r.family for r in rows],
        "state": [r.state for r in rows],
        "value": [_finite(r.value) for r in rows],
    }


def family_params(
    db: Database, study_id: int, family: str, limit: int = 1000
) -> list[tuple[int, dict[str, Any], float]]:
    """(number, Optuna params, value) of a family's best `limit` complete trials."""
    with db.session() as session:
        rows = session.execute(
            select(Run.trial_number, Run.params, Run.value)
            .where(
                Run.study_id == study_id,
                Run.family == family,
                Run.state == "complete",
                Run.value.is_not(None),
            )
            .order_by(Run.value.desc())
            .limit(limit)
        ).all()
    return [(r.trial_number, r.params or {}, r.value) for r in rows]


def family_trial_ids(db: Database, study_id: int, family: str) -> list[int]:
    """Optuna trial ids of a family's complete trials, best first (to read distributions)."""
    with db.session() as session:
        return list(
            session.scalars(
                select(Run.optuna_trial_id)
                .where(
                    Run.study_id == study_id,
                    Run.family == family,
                    Run.state == "complete",
                    Run.optuna_trial_id.is_not(None),
                )
                .order_by(Run.value.desc())
                .limit(1)
            )
        )


def complete_counts(db: Database, study_id: int) -> dict[str, int]:
    """Complete trials per family (the importance cache's key)."""
    with db.session() as session:
        rows = session.execute(
            select(Run.family, func.count())
            .where(Run.study_id == study_id, Run.state == "complete", Run.value.is_not(None))
            .group_by(Run.family)
        ).all()
    return {family or "?": n for family, n in rows}


# -- learning curves --------------------------------------------------------------------------
def learning_curves(
    db: Database, study_id: int, family: str | None = None, limit: int = 30
) -> list[dict[str, Any]]:
    """Per-epoch validation accuracy of the best complete, the running and recent pruned trials."""
    base = select(Run.id, Run.trial_number, Run.family, Run.state, Run.value).where(
        Run.study_id == study_id, Run.trial_number.is_not(None)
    )
    if family:
        base = base.where(Run.family == family)
    with db.session() as session:
        chosen = [
            *session.execute(
                base.where(Run.state == "complete").order_by(Run.value.desc()).limit(limit)
            ),
            *session.execute(base.where(Run.state == "running").order_by(Run.id).limit(limit)),
            *session.execute(
                base.where(Run.state == "pruned").order_by(Run.id.desc()).limit(limit)
            ),
        ]
        epochs = _epochs_of(session, [r.id for r in chosen])
    return [
        {
            "number": r.trial_number,
            "family": r.family,
            "state": r.state,
            "value": _finite(r.value),
            "epoch": [e[0] for e in epochs.get(r.id, [])],
            "val_acc": [e[1] for e in epochs.get(r.id, [])],
        }
        for r in chosen
    ]


def _epochs_of(session: Session, run_ids: list[int]) -> dict[int, list[tuple[int, float | None]]]:
    if not run_ids:
        return {}
    out: dict[int, list[tuple[int, float | None]]] = defaultdict(list)
    for run_id, epoch, val_acc in session.execute(
        select(Epoch.run_id, Epoch.epoch, Epoch.val_acc)
        .where(Epoch.run_id.in_(run_ids))
        .order_by(Epoch.run_id, Epoch.epoch)
    ):
        out[run_id].append((epoch, _finite(val_acc)))
    return out
