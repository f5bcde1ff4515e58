"""Keep Optuna's trials in step with our runs: the runs table is the truth.

A worker writes a run's outcome and its Optuna trial's end in one transaction (its held Optuna
writes, search_space.optuna_access) and stores the run synced. Where it could not (the trial's
end could not be made, a storage that does not hold Optuna's writes) and where a run is reaped,
the outcome is committed first and Optuna told afterwards, in another transaction: a worker
killed between the two, or a tell that failed, would leave the Optuna trial RUNNING for ever
(TPE's constant liar counts it in flight, optuna-dashboard shows a trial that never ends). A
worker killed after Optuna created a trial and before the run recorded its id leaves a RUNNING
trial that no run points to.

So such a run is stored with `optuna_synced = false` (Runs.finish without the trial's end,
reaping), and set true once Optuna has been told. `Reconciler.sweep()`, which every live worker runs at its
heartbeat (as it reaps lost runs), repairs what was left behind:

1. A run that ended more than `settle_s` ago, still not synced, with an Optuna trial: the trial is
   set to the run's state (COMPLETE with the run's value, PRUNED, or FAIL) unless Optuna has it
   finished already; the run is marked synced. `settle_s` leaves a live worker the time to tell
   Optuna itself (with its sampler's after_trial and last reports).
2. A run that ended without an Optuna trial (claimed, never attached): its orphan, if any, is a
   RUNNING trial of that study no run points to. One seen unreferenced on two sweeps at least
   `settle_s` apart is failed, with a fail_reason saying why (a live worker attaches a new trial
   within milliseconds of creating it); then such runs of the study are marked synced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import select, update

from search_space.optuna_access import trial_id_of
from service.db import Run, Study
from service.db.states import RunState
from service.store.base import Database

log = logging.getLogger(__name__)

# Our final run states as Optuna trial states (a cancelled run's trial is failed, as it is told).
OPTUNA_STATE = {
    RunState.COMPLETE: TrialState.COMPLETE,
    RunState.PRUNED: TrialState.PRUNED,
    RunState.FAILED: TrialState.FAIL,
    RunState.CANCELLED: TrialState.FAIL,
}
ORPHAN_REASON = "no run points to this trial: its worker was lost before it recorded the trial"
BATCH = 200  # runs repaired per sweep at most: a sweep stays short, the next one goes on


def _values(row: Any) -> list[float] | None:
    """What the run's worker tells Optuna: [accuracy], or [accuracy, cost] for a cost study."""
    if row.value is None:
        return None
    if row.cost_kind is None:
        return [row.value]
    return None if row.cost is None else [row.value, row.cost]


@dataclass(frozen=True)
class SweepReport:
    """What one sweep repaired: trials set to their run's state, orphan trials failed."""

    synced: list[int] = field(default_factory=list)  # run ids whose trial now agrees
    orphans_failed: list[int] = field(default_factory=list)  # Optuna trial ids


@dataclass
class Reconciler:
    """Repairs Optuna trials left RUNNING behind finished runs (see the module docstring)."""

    db: Database
    settle_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _suspects: dict[int, float] = field(default_factory=dict)  # orphan trial id -> first seen

    def sweep(self) -> SweepReport:
        """One pass: sync ended runs' trials, fail confirmed orphans; never raises for one trial."""
        report = SweepReport()
        cutoff = self.db.silent_since(self.settle_s)  # the database's clock, as finished_at's
        with self.db.session() as session:
            rows = session.execute(
                select(Run.id, Run.study_id, Run.state, Run.value, Run.cost, Run.cost_kind)
                .add_columns(Run.optuna_trial_id)
                .where(Run.optuna_synced.is_(False), Run.finished_at < cutoff)
                .order_by(Run.id)
                .limit(BATCH)
            ).all()
        attachless: dict[int, list[int]] = {}  # study -> its runs that ended without a trial
        for row in rows:
            if row.optuna_trial_id is None:
                attachless.setdefault(row.study_id, []).append(row.id)
            elif self._sync(row.optuna_trial_id, row):
                report.synced.append(row.id)
        self._mark_synced(report.synced)
        for study_id, run_ids in sorted(attachless.items()):
            if self._sweep_orphans(study_id, report):
                self._mark_synced(run_ids)
        return report

    # -- ended runs -------------------------------------------------------------------------------
    def _sync(self, trial_id: int, row: Any) -> bool:
        """Set the trial to the run's state; True once they agree (or the trial is gone)."""
        state = OPTUNA_STATE.get(RunState(row.state))
        if state is None:
            return False  # not a final state: nothing to tell yet
        values = _values(row) if state == TrialState.COMPLETE else None
        if state == TrialState.COMPLETE and values is None:
            state = TrialState.FAIL  # a complete run without a finite value cannot be a result
        try:
            self.db.optuna.set_trial_state_values(trial_id, state, values)
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            return True  # told already, or deleted with its study: nothing left to repair
        log.warning(
            "run %s: Optuna trial %s was still running; set to %s from the run's record",
            row.id, trial_id, state.name,
        )  # fmt: skip
        return True

    def _mark_synced(self, run_ids: list[int]) -> None:
        if not run_ids:
            return
        with self.db.session() as session:
            session.execute(
                update(Run)
                .where(Run.id.in_(run_ids))
                .values(optuna_synced=True)
                .execution_options(synchronize_session=False)
            )

    # -- orphan trials ----------------------------------------------------------------------------
    def _sweep_orphans(self, study_id: int, report: SweepReport) -> bool:
        """Fail the study's confirmed orphans; True when none is left to confirm."""
        unreferenced = self._unreferenced_running_trials(study_id)
        if unreferenced is None:
            return True  # the study is gone, and its trials with it
        now = self.clock()
        waiting = False
        for trial_id in unreferenced:
            first_seen = self._suspects.setdefault(trial_id, now)
            if now - first_seen < self.settle_s:
                waiting = True  # seen once: confirm on a later sweep
                continue
            if self._fail_orphan(trial_id):
                report.orphans_failed.append(trial_id)
            self._suspects.pop(trial_id, None)
        return not waiting

    def _unreferenced_running_trials(self, study_id: int) -> list[int] | None:
        """Optuna trials of the study that run with no run pointing to them (None: no study)."""
        with self.db.session() as session:
            name = session.scalar(select(Study.optuna_name).where(Study.id == study_id))
        if name is None:
            return None
        try:
            optuna_id = self.db.optuna.get_study_id_from_name(name)
        except KeyError:
            return None
        running = self.db.optuna.get_all_trials(
            optuna_id, deepcopy=False, states=(TrialState.RUNNING,)
        )
        ids = [trial_id_of(trial) for trial in running]
        if not ids:
            return []
        with self.db.session() as session:
            referenced = set(
                session.scalars(select(Run.optuna_trial_id).where(Run.optuna_trial_id.in_(ids)))
            )
        return [trial_id for trial_id in ids if trial_id not in referenced]

    def _fail_orphan(self, trial_id: int) -> bool:
        try:
            self.db.optuna.set_trial_system_attr(trial_id, "fail_reason", ORPHAN_REASON)
            self.db.optuna.set_trial_state_values(trial_id, TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            return False
        log.warning("Optuna trial %s had no run (its worker was lost): failed", trial_id)
        return True
