"""No identical training twice: seed by seed, train it, or take the recorded training.

A training is one configuration and one seed (EVIDENCE.md). Before a trial trains a seed, the
ledger (service.store.trainings) is asked whether that exact training exists, within the
study or, with `reuse: team`, in any study of the database. The spec's `repeats` says what a
repeat does: `reseed` trains the same configuration with the next unused seed (the repeat adds
evidence); `reuse` takes the recorded result without training (waiting while another worker
trains it). `reuse: none` trains every trial as asked, identical ones included.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, cast

from search_space.contract import TrialConfig
from service.db.outage import db_retry
from service.store import NewTraining, Store, TrainingRow
from workers.training import Stop

log = logging.getLogger(__name__)

T = TypeVar("T")
WAIT_POLL_S = 1.0  # how often a reuse waiting for another worker's training looks again


@dataclass(frozen=True)
class SeedPlan:
    """What to do for one seed: train it (`training_id`), or take `recorded` instead."""

    seed: int
    training_id: int | None = None
    recorded: TrainingRow | None = None


@dataclass(frozen=True)
class Identity:
    """What, besides its config, makes a training this one: data and training code."""

    data_checksum: str
    code_version: str


class Repeats:
    """Plans each seed of one run (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        study_id: int,
        run_id: int,
        config: TrialConfig,
        identity: Identity,
        repeats: str,
        scope: str,
        stop: threading.Event,
    ) -> None:
        self.trainings = store.trainings
        self.study_id = study_id
        self.run_id = run_id
        self.config = config
        self.identity = identity
        self.repeats = repeats
        self.scope = scope
        self.stop = stop
        self.config_key = config.configuration_key(identity.data_checksum, identity.code_version)

    def plan(self, seed: int) -> SeedPlan:
        """The seed to train (claimed for this run), or the recorded training to take."""
        while True:
            new = self._new(seed)
            if self.scope == "none":  # no lock: every trial trains
                return SeedPlan(seed, training_id=cast(int, self._claim(new, None)))
            if self.scope == "team":
                found = self._db(partial(self.trainings.recorded, new.key, None), "look up")
                if found is not None:
                    if self.repeats == "reuse":
                        return self._take(new, found)
                    seed = self._next_seed(seed)
                    continue
            lock = new.key if self.scope == "team" else f"{self.study_id}:{new.key}"
            claimed = self._claim(new, lock)
            if isinstance(claimed, int):
                return SeedPlan(seed, training_id=claimed)
            if claimed is None:
                continue  # the holder let it go meanwhile: claim again
            if self.repeats == "reseed":
                seed = self._next_seed(seed)  # trained, or being trained: a fresh seed instead
            elif claimed.state == "complete":
                return self._take(new, claimed)
            else:
                self._wait(claimed)  # another run trains it now: its result, once it has one

    def finish(self, plan: SeedPlan, val_acc: float | None, test_acc: float | None) -> None:
        """The planned seed trained to completion: record its result."""
        training_id = plan.training_id
        if training_id is not None:
            self._db(
                lambda: self.trainings.finish(training_id, val_acc=val_acc, test_acc=test_acc),
                "record the training",
            )

    # -- steps --------------------------------------------------------------------------------
    def _new(self, seed: int) -> NewTraining:
        ident = self.identity
        return NewTraining(
            study_id=self.study_id,
            run_id=self.run_id,
            family=self.config.activation.family,
            key=self.config.training_key(seed, ident.data_checksum, ident.code_version),
            config_key=self.config_key,
            seed=seed,
            data_checksum=ident.data_checksum,
            code_version=ident.code_version,
        )

    def _claim(self, new: NewTraining, lock: str | None) -> int | TrainingRow | None:
        return self._db(lambda: self.trainings.claim(new, lock), "claim the training")

    def _take(self, new: NewTraining, found: TrainingRow) -> SeedPlan:
        if found.study_id != self.study_id:  # another study's: recorded in this one too
            self._db(lambda: self.trainings.record_reuse(new, found), "record the reuse")
        log.info(
            "run %s seed %s: trained before (training %s of run %s); its result is reused",
            self.run_id, new.seed, found.id, found.run_id,
        )  # fmt: skip
        return SeedPlan(new.seed, recorded=found)

    def _next_seed(self, seed: int) -> int:
        taken = self._db(
            lambda: self.trainings.seeds_taken(
                self.study_id, self.config_key, team=self.scope == "team"
            ),
            "list the seeds trained",
        )
        fresh = seed + 1
        while fresh in taken:
            fresh += 1
        log.info("run %s: seed %s of this configuration was trained; seed %s instead",
                 self.run_id, seed, fresh)  # fmt: skip
        return fresh

    def _wait(self, holder: TrainingRow) -> None:
        log.info("run %s: waiting for run %s, which trains this configuration and seed",
                 self.run_id, holder.run_id)  # fmt: skip
        while True:
            if self.stop.wait(WAIT_POLL_S):
                raise Stop("handed_back")
            now = self._db(lambda: self.trainings.get(holder.id), "look at the training")
            if now is None or now.state != "running":
                return

    def _db(self, fn: Callable[[], T], what: str) -> T:
        return db_retry(fn, what, stop=self.stop)
