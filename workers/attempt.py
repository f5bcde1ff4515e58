"""One attempt at one trial: train every seed, report each epoch live, store the outcome.

Order of writes: each epoch is reported to Optuna and stored at once, Optuna's value in the
epoch's own transaction (search_space.optuna_access.HeldWrites), then the pruner is asked; the
run's outcome and its Optuna trial's end are stored in one transaction, the run marked synced.
Where the trial's writes are not held (a storage that cannot), or its end could not be made,
the outcome is stored first and Optuna told afterwards (service.store.reconcile repairs a trial
whose telling was cut short). Every database write is retried with back-off while the database
is unreachable: epoch reports are buffered meanwhile and training goes on; the final result
waits for the database (a second SIGTERM ends that wait).

A study with a cost objective (spec `objectives`: [accuracy, step_time | params]) is told
[accuracy, cost]: the cost is measured here after training (workers.cost) and stored with the
run (its unit and device). Optuna cannot prune multi-objective trials (`trial.report` refuses
them), so such a run stores its epochs but reports none to Optuna.

Several seeds (config `seeds` > 1): seed i trains with `seed + i`. Only the first seed's curve is
stored per epoch and used for pruning; the objective is the mean final validation accuracy over
the seeds, value_std their population standard deviation, and the record (the first seed's)
gains "seeds": one summary per seed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from search_space.contract import TrialConfig
from search_space.optuna_access import HeldWrites, held_writes, holds, tell_without_reread
from service.db.outage import db_retry, describe_db_error, is_db_outage
from service.settings import Settings
from service.store import Claim, Cost, NotFound, RunStatus, Store, TrainingRow
from workers.failures import TrialFailure
from workers.progress import LiveProgress
from workers.repeats import Repeats
from workers.training import Stop, Training

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 20_000


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as far as this worker is concerned."""

    state: str  # complete | pruned | failed | cancelled | handed_back | abandoned | released
    value: float | None = None
    reason: str | None = None
    skip_study: bool = False  # this machine cannot run the study; others may (leave it to them)


@dataclass(frozen=True)
class SeedResult:
    """One seed of a trial: trained here (with its record) or taken from a recorded training."""

    seed: int
    val_acc: float
    test_acc: float
    best_val_acc: float | None = None
    duration_s: float | None = None
    record: dict[str, Any] | None = None  # the trained seed's TrialRecord as JSON
    reused_from_run: int | None = None
    training_id: int | None = None  # the recorded training taken

    @classmethod
    def trained(cls, seed: int, record: Any) -> SeedResult:
        """A seed this run trained."""
        return cls(
            seed, float(record.val_acc), float(record.test_acc), float(record.best_val_acc),
            float(record.duration_s), record.to_json(),
        )  # fmt: skip

    @classmethod
    def taken(cls, seed: int, recorded: TrainingRow) -> SeedResult:
        """A seed whose training was recorded before (workers.repeats)."""
        return cls(
            seed, float(recorded.val_acc or 0.0), float(recorded.test_acc or 0.0),
            reused_from_run=recorded.run_id, training_id=recorded.id,
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """The seed's line in the record's "seeds" list."""
        return {
            "seed": self.seed,
            "val_acc": self.val_acc,
            "best_val_acc": self.best_val_acc,
            "test_acc": self.test_acc,
            "duration_s": self.duration_s,
            "reused_from_run": self.reused_from_run,
        }


@dataclass
class RunContext:
    """What every run of one worker process shares."""

    store: Store
    settings: Settings
    worker_id: str
    training: Training
    hostname: str = field(default_factory=socket.gethostname)  # as the worker registered itself
    stopping: threading.Event = field(default_factory=threading.Event)  # finish epoch, hand back
    aborting: threading.Event = field(default_factory=threading.Event)  # hand back now
    progress: LiveProgress = field(default_factory=LiveProgress)  # sent with the heartbeat
    # Runs whose Optuna trial was told: marked synced with the worker's next claim (one
    # transaction less per trial), or when it stops; the reconciler knows what is left.
    told: list[int] = field(default_factory=list)


@dataclass
class _Reports:
    """Epoch reports not yet stored (the database was unreachable); stored in order later."""

    epochs: list[Any] = field(default_factory=list)
    optuna: list[tuple[int, float]] = field(default_factory=list)


class Attempt:
    """One run from its first epoch to its stored outcome."""

    def __init__(
        self,
        context: RunContext,
        claim: Claim,
        study: optuna.Study,
        trial: optuna.Trial,
        config: TrialConfig | None,
        data: Any,
        repeats: Repeats | None = None,
        data_load_s: float | None = None,
        cost: str | None = None,
    ) -> None:
        self.context = context
        self.repeats = repeats  # None: an attempt that only records its failure
        self.data_load_s = data_load_s  # decoding the data set for this run (0: cached)
        self.cost = cost  # the spec's cost objective (step_time, params); None: accuracy only
        self.store = context.store
        self.claim = claim
        self.study = study
        self.trial = trial
        self.config = config
        self.data = data
        self.seeds = config.seeds if config is not None else 1
        self.seed_index = 0
        self.reporting_index: int | None = None  # the first seed trained: its curve is stored
        self.pending = _Reports()
        self.last_val: float | None = None
        self.last_epoch: int | None = None
        self.started = time.monotonic()

    @property
    def run_id(self) -> int:
        """The run this attempt trains."""
        return self.claim.run_id

    def run(self) -> Outcome:
        """Pre-screen, train every seed, store the outcome."""
        assert self.config is not None, "an attempt without a config only records its failure"
        config = self.config
        ok, reason = self.context.training.prescreen(config)
        if not ok:
            return self._fail("rejected", reason or "rejected by the pre-screen", None, None)
        results: list[SeedResult] = []
        try:
            for index in range(self.seeds):
                self.seed_index = index
                results.append(self._seed(config, index))
        except optuna.TrialPruned:
            return self._pruned()
        except Stop as stop:
            # A stop the heartbeat asked for says why; the trainer only knows that it stopped.
            return self._stopped(self._asked_reason() or stop.reason)
        except Exception as error:
            return self._failed(error)
        return self._complete(results)

    def _seed(self, config: TrialConfig, index: int) -> SeedResult:
        """Train seed `index` of the trial, or take its recorded training (workers.repeats)."""
        assert self.repeats is not None
        plan = self.repeats.plan(config.seed + index)
        if plan.recorded is not None:
            return SeedResult.taken(plan.seed, plan.recorded)
        if self.reporting_index is None:
            self.reporting_index = index
        training = config.training
        self.context.progress.start_seed(index, self.seeds, training.epochs, training.batch_size)
        record = self.context.training.train(
            config.with_seed(plan.seed),
            self.data,
            self._on_epoch,
            self._should_stop,
            on_step=self.context.progress.step,
        )
        self.repeats.finish(plan, _finite(record.val_acc), _finite(record.test_acc))
        return SeedResult.trained(plan.seed, record)

    # -- during training --------------------------------------------------------------------
    def _should_stop(self) -> bool:
        """Polled by the trainer every few steps: a second signal, or a stop the heartbeat
        brought back (study cancelled or paused, run reaped), ends the epoch early."""
        return self.context.aborting.is_set() or self._asked_reason() is not None

    def _asked_reason(self) -> str | None:
        """Why the heartbeat says this run must stop, as a Stop reason (None: go on)."""
        reason = self.context.progress.stop_reason
        if reason is None:
            return None
        return reason if reason in ("cancelled", "paused") else "abandoned"

    def _on_epoch(self, report: Any) -> None:
        last = report.epoch == report.epochs - 1 and self.seed_index == self.seeds - 1
        if self.seed_index == self.reporting_index:
            log.info(
                "run %s epoch %d/%d: loss %.4f val_acc %.4f %.0f img/s",
                self.run_id, report.epoch + 1, report.epochs, report.train_loss,
                report.val_acc, report.img_per_s,
            )  # fmt: skip
            self.last_val, self.last_epoch = report.val_acc, report.epoch
            self.pending.epochs.append(report)
            if self.cost is None:  # a multi-objective trial cannot be reported to (nor pruned)
                self.pending.optuna.append((report.epoch, float(report.val_acc)))
                self._report_to_optuna()  # held: stored with the epoch, in its transaction
            self._stop_if_asked(self._flush(), last)
            # At the last epoch of the last seed pruning saves nothing and would file a whole
            # result as pruned (TPE then ranks it below every complete trial): report only.
            prune = self.cost is None and not last and self._should_prune()
        else:
            log.info(
                "run %s seed %d/%d epoch %d/%d: val_acc %.4f",
                self.run_id, self.seed_index + 1, self.seeds, report.epoch + 1, report.epochs,
                report.val_acc,
            )  # fmt: skip
            self._stop_if_asked(self._status(), last)
            prune = False
        if prune:
            raise optuna.TrialPruned(f"pruned at epoch {report.epoch}")

    def _stop_if_asked(self, status: RunStatus | None, last: bool) -> None:
        reason = status.stop_reason if status is not None else None
        if reason in ("cancelled", "paused"):
            raise Stop(reason)
        if reason is not None:
            raise Stop("abandoned")  # reaped meanwhile: its retry belongs to another worker
        if self.context.stopping.is_set() and not last:
            raise Stop("handed_back")

    def _flush(self, *, wait: bool = False) -> RunStatus | None:
        """Store buffered epochs in order; None when the database is unreachable (kept)."""
        status = None
        while self.pending.epochs:
            report = self.pending.epochs[0]
            try:
                status = self._store_epoch(report, wait=wait)
            except Stop:
                raise
            except Exception as error:
                if not is_db_outage(error):
                    raise
                log.warning(
                    "run %s: epoch %d kept until the database is back (%s)",
                    self.run_id, report.epoch + 1, describe_db_error(error),
                )  # fmt: skip
                return None
            self.pending.epochs.pop(0)
        return status

    def _flush_final(self) -> None:
        """Store every buffered epoch, waiting for the database (the run is ending)."""
        with contextlib.suppress(Stop):  # the run is gone; finish() will say so
            self._flush(wait=True)

    def _store_epoch(self, report: Any, *, wait: bool) -> RunStatus:
        held = held_writes(self.study, self.trial)  # the values reported to Optuna meanwhile

        def write() -> RunStatus:
            return self.store.runs.report_epoch(
                self.run_id,
                report.epoch,
                train_loss=_finite(report.train_loss),
                val_acc=_finite(report.val_acc),
                img_per_s=_finite(report.img_per_s),
                elapsed_s=_finite(report.elapsed_s),
                worker_id=self.context.worker_id,
                also=None if held is None else held.write,
            )

        try:
            status = db_retry(
                write, "store an epoch", attempts=0 if wait else 1, stop=self.context.aborting
            )
        except NotFound as error:
            raise Stop("abandoned") from error  # the study was deleted meanwhile
        if held is not None and status.running:
            held.written()
        return status

    def _report_pending(self) -> None:
        """Report buffered values to Optuna, in order (each one dropped once reported)."""
        while self.pending.optuna:
            epoch, value = self.pending.optuna[0]
            self.trial.report(value, epoch)
            self.pending.optuna.pop(0)

    def _report_to_optuna(self) -> None:
        """Report buffered values to Optuna (kept while the database is unreachable)."""
        try:
            self._report_pending()
        except optuna.exceptions.UpdateFinishedTrialError as error:
            raise Stop("abandoned") from error  # reaped meanwhile: Optuna's trial is failed
        except Exception as error:
            if not is_db_outage(error):
                raise
            log.warning("run %s: report to Optuna kept (%s)", self.run_id, describe_db_error(error))

    def _should_prune(self) -> bool:
        """Whether the pruner says stop (False if the database is unreachable)."""
        if self.pending.optuna or isinstance(self.study.pruner, optuna.pruners.NopPruner):
            return False  # not reported yet; or spares the pruner's read of every trial
        try:
            return bool(self.trial.should_prune())
        except Exception as error:
            if not is_db_outage(error):
                raise
            log.warning("run %s: pruning check skipped (%s)", self.run_id, describe_db_error(error))
            return False

    def _status(self) -> RunStatus | None:
        try:
            return self.store.runs.status(self.run_id)
        except NotFound as error:
            raise Stop("abandoned") from error
        except Exception as error:
            if not is_db_outage(error):
                raise
            return None

    # -- outcomes ---------------------------------------------------------------------------
    def _complete(self, results: list[SeedResult]) -> Outcome:
        values = [r.val_acc for r in results]
        tests = [r.test_acc for r in results]
        record = self._record(results)
        if self.data_load_s is not None:
            record["data_load_s"] = self.data_load_s  # apart from the training's own time
        value_std = statistics.pstdev(values) if len(results) > 1 else None
        if len(results) > 1 or any(r.reused_from_run is not None for r in results):
            record["seeds"] = [r.summary() for r in results]
        value = statistics.fmean(values)
        trained = [r for r in results if r.reused_from_run is None]
        assert self.config is not None
        try:
            cost = self._measure_cost(record, reused=not trained)
        except Exception as error:
            return self._fail(
                "error", f"the cost could not be measured: {error}", None, traceback.format_exc()
            )
        self._finish(
            _Told(value, None, cost),
            state="complete",
            value=value,
            value_std=value_std,
            test_acc=statistics.fmean(tests),
            record=record,
            config=self.config.model_copy(update={"seed": results[0].seed}).canonical(),
            reused_from_run=None if trained else results[0].reused_from_run,
            cost=cost,
        )
        log.info(
            "run %s complete: val_acc %.4f test_acc %.4f in %.1f s%s",
            self.run_id, value, statistics.fmean(tests), time.monotonic() - self.started,
            "" if trained else " (every seed reused: nothing trained)",
        )  # fmt: skip
        return Outcome("complete", value=value)

    def _measure_cost(self, record: dict[str, Any], *, reused: bool) -> Cost | None:
        """The run's cost (None: accuracy only), also kept in its record under "cost".

        A run that trained nothing keeps the cost its source run measured, if of this kind."""
        if self.cost is None:
            return None
        assert self.config is not None
        given = record.get("cost")
        if not (reused and isinstance(given, dict) and given.get("kind") == self.cost):
            given = self.context.training.measure_cost(self.cost, self.config, self.data, record)
        value = _finite(given.get("value"))
        if value is None:
            raise ValueError(f"the {self.cost} cost is {given.get('value')!r}")
        record["cost"] = given
        log.info(
            "run %s: %s cost %.4g %s on %s",
            self.run_id, self.cost, value, given.get("unit"), given.get("device"),
        )  # fmt: skip
        return Cost(self.cost, value, str(given.get("device")))

    def _record(self, results: list[SeedResult]) -> dict[str, Any]:
        """The first trained seed's record; else the reused run's, saying where it came from."""
        for result in results:
            if result.record is not None:
                return dict(result.record)
        source = results[0].reused_from_run
        recorded = None
        if source is not None:
            recorded = db_retry(lambda: self.store.runs.record_of(source), "read the reused record")
        record = dict(recorded or {})
        record["reused"] = {"run_id": source, "training_id": results[0].training_id}
        return record

    def _pruned(self) -> Outcome:
        self._flush_final()
        self._finish(_Told(None, TrialState.PRUNED), state="pruned", value=self.last_val)
        log.info("run %s pruned after epoch %s", self.run_id, (self.last_epoch or 0) + 1)
        return Outcome("pruned", value=self.last_val, reason="pruned")

    def _stopped(self, reason: str) -> Outcome:
        if reason == "abandoned":
            log.warning(
                "run %s was taken from this worker (reaped or deleted); dropped", self.run_id
            )
            return Outcome("abandoned", reason="worker_lost")
        self._flush_final()
        if reason == "cancelled":
            self._finish(
                _Told(None, TrialState.FAIL),
                state="cancelled",
                value=self.last_val,
                failure_reason="cancelled",
                failure_message="the study was cancelled",
                failure_epoch=self.last_epoch,
            )
            log.info("run %s cancelled with its study", self.run_id)
            return Outcome("cancelled", reason="cancelled")
        why = "its study was paused" if reason == "paused" else "worker stopped (signal)"
        db_retry(
            lambda: self.store.runs.hand_back(self.run_id, why),
            "hand the run back",
            stop=self.context.aborting,
        )
        log.info("run %s handed back (%s): retried with the same parameters", self.run_id, why)
        return Outcome("handed_back", reason="worker_lost")

    def _failed(self, error: Exception) -> Outcome:
        if isinstance(error, TrialFailure):
            return self._fail(
                error.kind, error.message, error.epoch, error.details or error.message
            )
        # Not a classified failure: a bug or an unexpected error in this worker.
        trace = traceback.format_exc()
        return self._fail("error", f"{type(error).__name__}: {error}", self.last_epoch, trace)

    def _fail(self, reason: str, message: str, epoch: int | None, details: str | None) -> Outcome:
        self._flush_final()
        self._finish(
            _Told(None, TrialState.FAIL),
            state="failed",
            value=None,
            failure_reason=reason,
            failure_message=message,
            failure_epoch=epoch,
            log_tail=(details or message)[-LOG_TAIL_CHARS:],
        )
        where = f" at epoch {epoch + 1}" if epoch is not None else ""
        log.warning("run %s failed (%s%s): %s", self.run_id, reason, where, message)
        return Outcome("failed", reason=reason)

    def _finish(self, told: _Told, *, state: str, value: float | None, **fields: Any) -> None:
        """Store the outcome and tell Optuna (waiting for the database); a run reaped meanwhile
        has its result dropped.

        Where the trial's writes are held, the trial's end is written in the outcome's own
        transaction and the run is stored synced; otherwise Optuna is told afterwards."""
        if state == "complete":
            self._flush_final()
        holding = holds(self.study, self.trial)
        held = self._held_end(told) if holding else None
        try:
            stored = bool(
                db_retry(
                    lambda: self.store.runs.finish(
                        self.run_id,
                        state=state,
                        value=_finite(value),
                        tell=None if held is None else held.write,
                        **fields,
                    ),
                    "store the run's outcome",
                    stop=self.context.aborting,
                )
            )
        except NotFound:
            log.warning("run %s is gone (study deleted?); its outcome is dropped", self.run_id)
            return
        if stored and held is not None:
            held.written()
        elif stored and not holding:
            self._tell(told)
        # Held, but Optuna's end could not be made: stored unsynced, the reconciler tells it.

    def _held_end(self, told: _Told) -> HeldWrites | None:
        """Tell Optuna while the trial's writes are held: what it would write, to be stored
        with the outcome (None: it could not be made)."""
        try:
            self._report_to_optuna()
            tell_without_reread(self.study, self.trial, told.values(), told.state, verify=False)
        except Exception:
            log.exception("run %s: Optuna's end of the trial could not be made", self.run_id)
            return None  # stored unsynced: the reconciler tells Optuna from the run's record
        held = held_writes(self.study, self.trial)
        return held if held is not None and held.ends else None

    def _tell(self, told: _Told) -> None:
        """Report buffered epochs to Optuna, then finish its trial (waiting for the database)."""

        def tell() -> None:
            self._report_pending()
            tell_without_reread(self.study, self.trial, told.values(), told.state)

        try:
            db_retry(tell, "tell Optuna the result", stop=self.context.aborting)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("run %s: its Optuna trial was already finished", self.run_id)
        except Exception:
            # The run stays unsynced: the reconciler sets the trial from the run's record.
            log.exception("run %s: Optuna could not be told the result", self.run_id)
            return
        self.context.told.append(self.run_id)


@dataclass(frozen=True)
class _Told:
    """What Optuna is told at a run's end: a value (complete) or a state (pruned, failed).

    A complete run with a cost is told [accuracy, cost] (the study has two directions)."""

    value: float | None
    state: TrialState | None = None
    cost: Cost | None = None

    def values(self) -> float | list[float] | None:
        told = _finite(self.value) if self.state is None else None
        if told is not None and self.cost is not None:
            return [told, self.cost.value]
        return told


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
