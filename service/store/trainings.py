"""The trainings ledger: each (configuration, seed) is trained once, and racing workers agree.

A training's `key` is exact (workers.attempt builds it from the canonical config, the seed, the
data checksum and the training code's version). Before a worker trains a seed it claims the key's
lock: "<study id>:<key>" for a study that keeps results to itself, the bare key for one that
shares them with the team (`reuse: team`), none for `reuse: none`. A unique index on the lock
gives racing workers one winner; the loser finds the holder's row and, by the spec's `repeats`,
takes its result (`reuse`, waiting while it trains) or moves to the next unused seed (`reseed`).
A training that does not complete (failure, pruning, cancellation, a lost worker) releases its
lock so that the configuration can be trained again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import Training, TrainingState, utcnow
from service.store.base import Database


@dataclass(frozen=True)
class TrainingRow:
    """What a worker needs to know of a recorded or running training."""

    id: int
    study_id: int
    run_id: int | None
    seed: int
    state: str
    val_acc: float | None
    test_acc: float | None


@dataclass(frozen=True)
class NewTraining:
    """A training about to be claimed: its identity and where it belongs."""

    study_id: int
    run_id: int
    family: str
    key: str
    config_key: str
    seed: int
    data_checksum: str
    code_version: str


def _row(training: Training) -> TrainingRow:
    return TrainingRow(
        training.id,
        training.study_id,
        training.run_id,
        int(training.seed),
        training.state,
        training.val_acc,
        training.test_acc,
    )


class Trainings:
    """Claim, finish, release and look up trainings."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, new: NewTraining, lock_key: str | None) -> int | TrainingRow | None:
        """Reserve a training for `new.run_id`.

        Returns the new row's id when this run is to train it; the holder's row when another
        run holds the lock (training it, or trained it); None when the holder let it go in the
        meantime (claim again).
        """
        try:
            with self.db.session() as session:
                row = _new_row(new, lock_key=lock_key, state=TrainingState.RUNNING)
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError:
            pass  # the lock is held: read the holder
        with self.db.session() as session:
            holder = session.scalars(select(Training).where(Training.lock_key == lock_key)).first()
            return None if holder is None else _row(holder)

    def get(self, training_id: int) -> TrainingRow | None:
        """One training's current row."""
        with self.db.session() as session:
            training = session.get(Training, training_id)
            return None if training is None else _row(training)

    def recorded(self, key: str, study_id: int | None) -> TrainingRow | None:
        """A complete training with this key: in the study, or (None) in any study."""
        query = select(Training).where(
            Training.key == key,
            Training.state == TrainingState.COMPLETE,
            Training.reused_from.is_(None),
            Training.val_acc.is_not(None),
        )
        if study_id is not None:
            query = query.where(Training.study_id == study_id)
        with self.db.session() as session:
            found = session.scalars(query.order_by(Training.id).limit(1)).first()
            return None if found is None else _row(found)

    def seeds_taken(self, study_id: int, config_key: str, *, team: bool) -> set[int]:
        """Seeds of this configuration trained or being trained (in the study; team: anywhere
        complete), so that a reseed takes a fresh one."""
        mine = (Training.study_id == study_id) & (Training.state != TrainingState.FAILED)
        where: ColumnElement[bool] = mine
        if team:
            where = or_(mine, Training.state == TrainingState.COMPLETE)
        with self.db.session() as session:
            return {
                int(seed)
                for seed in session.scalars(
                    select(Training.seed).where(Training.config_key == config_key, where)
                )
            }

    def finish(self, training_id: int, *, val_acc: float | None, test_acc: float | None) -> None:
        """The training completed: its result stands (and keeps its lock: no second training)."""
        with self.db.session() as session:
            session.execute(
                update(Training)
                .where(Training.id == training_id)
                .values(
                    state=TrainingState.COMPLETE,
                    val_acc=val_acc,
                    test_acc=test_acc,
                    finished_at=utcnow(),
                )
            )

    def record_reuse(self, new: NewTraining, source: TrainingRow) -> int:
        """Another study's training, taken by this one: a complete row pointing at the source."""
        with self.db.session() as session:
            row = _new_row(
                new,
                lock_key=None,
                state=TrainingState.COMPLETE,
                val_acc=source.val_acc,
                test_acc=source.test_acc,
                reused_from=source.id,
                finished_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return row.id

    def release(self, run_ids: Collection[int]) -> None:
        """Runs that ended without completing: their unfinished trainings may be trained again."""
        if not run_ids:
            return
        with self.db.session() as session:
            release_unfinished(session, run_ids)


def release_unfinished(session: Session, run_ids: Collection[int]) -> None:
    """In the caller's transaction: the runs' running trainings fail and give up their locks."""
    session.execute(RELEASE_UNFINISHED, {"b_runs": list(run_ids), "b_now": utcnow()})


# Built once: it runs in every finished run's transaction (see service.store.runs, its
# statements built once). Core, not the ORM entity: no ORM bulk-update work per call.
_TRAININGS = cast(Table, Training.__table__).c
RELEASE_UNFINISHED = (
    update(cast(Table, Training.__table__))
    .where(
        _TRAININGS.run_id.in_(bindparam("b_runs", expanding=True)),
        _TRAININGS.state == TrainingState.RUNNING,
    )
    .values(
        state=TrainingState.FAILED,
        lock_key=None,
        finished_at=bindparam("b_now", type_=_TRAININGS.finished_at.type),
    )
)


def _new_row(new: NewTraining, **values: Any) -> Training:
    """A ledger row for `new`, with what differs between a claim and a reuse in `values`."""
    return Training(
        study_id=new.study_id,
        run_id=new.run_id,
        key=new.key,
        config_key=new.config_key,
        family=new.family,
        seed=new.seed,
        data_checksum=new.data_checksum,
        code_version=new.code_version,
        created_at=utcnow(),
        **values,
    )
