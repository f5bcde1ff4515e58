"""Read-only queries behind the dashboard's charts: aggregates the REST API does not serve.

Every function takes the store's `Database`, opens one short transaction and returns plain
data ready for JSON. Large columns (`record`, `config`) are never read here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import Epoch, Run
from service.store import Database
from service.store import queries as store_queries


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# -- families: leaderboard and headline --------------------------------------------------------
def leaderboard(db: Database, study_id: int) -> dict[str, Any]:
    """The study's family leaderboard (the API's, in its rank order) and the headline."""
    board = store_queries.leaderboard(db, study_id)
    table: list[dict[str, Any]] = [
        {
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
        for row in board.rows
    ]
    base_row = next((r for r in table if r["is_baseline"]), None)
    return {
        "baseline": board.baseline,
        "ranked_by": board.ranked_by,
        "ranking": store_queries.RANKING,
        "families": table,
        "headline": _headline(table, base_row),
    }


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
