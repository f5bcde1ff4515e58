"""Read-only queries behind the dashboard's charts: per-trial data the REST API does not serve.

Every function takes the store's `Database`, opens one short transaction and returns plain
data ready for JSON. Large columns (`record`, `config`) are never read here. The family
leaderboard and headline are the store's read model (service.store.queries.leaderboard).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import Epoch, Run, RunState, Study
from service.store import Database


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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
                Run.state == RunState.COMPLETE,
                Run.value.is_not(None),
            )
            .order_by(Run.value.desc())
            .limit(limit)
        ).all()
    return [(r.trial_number, r.params or {}, r.value) for r in rows]


def best_trial_ids(db: Database, study_id: int, family: str, limit: int = 5) -> list[int]:
    """Optuna trial ids of a family's `limit` best complete trials, best first.

    Where the family's parameter distributions are read from: the best trial's, or the next
    one's when that trial's Optuna record is gone or lacks a parameter.
    """
    with db.session() as session:
        return list(
            session.scalars(
                select(Run.optuna_trial_id)
                .where(
                    Run.study_id == study_id,
                    Run.family == family,
                    Run.state == RunState.COMPLETE,
                    Run.optuna_trial_id.is_not(None),
                )
                .order_by(Run.value.desc(), Run.id)
                .limit(limit)
            )
        )


def complete_counts(db: Database, study_id: int) -> dict[str, int]:
    """Complete trials per family (the importance cache's key)."""
    with db.session() as session:
        rows = session.execute(
            select(Run.family, func.count())
            .where(Run.study_id == study_id, Run.state == RunState.COMPLETE, Run.value.is_not(None))
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
                base.where(Run.state == RunState.COMPLETE).order_by(Run.value.desc()).limit(limit)
            ),
            *session.execute(
                base.where(Run.state == RunState.RUNNING).order_by(Run.id).limit(limit)
            ),
            *session.execute(
                base.where(Run.state == RunState.PRUNED).order_by(Run.id.desc()).limit(limit)
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


def existing_studies(db: Database, study_ids: set[int]) -> set[int]:
    """Those of `study_ids` that still exist (caches drop the others)."""
    if not study_ids:
        return set()
    with db.session() as session:
        return set(session.scalars(select(Study.id).where(Study.id.in_(study_ids))))
