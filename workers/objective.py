"""One claimed run → one Optuna trial → training → live reports → finish.

Order of writes, so that nothing is half-written: the data are resolved before Optuna is asked
(missing data fail the study and release the claim without a trace); then the trial is created
(a retry gets a trial fixed to the lost attempt's parameters) and attached to the run; each epoch
is stored at once and reported to Optuna (pruning); the run's outcome is stored, then told to
Optuna. Every database write is retried with back-off while the database is unreachable: epoch
reports are buffered meanwhile and training goes on; final results wait for the database.

Several seeds (config "seeds" > 1): seed i trains with config["seed"] + i. Only the first seed's
curve is stored per epoch and used for pruning; the objective is the mean final validation
accuracy over the seeds, value_std their population standard deviation, and the record (the
first seed's) gains "seeds": one summary per seed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import statistics
import threading
import time
import traceback
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

try:  # Study.tell's body; see tell_optuna
    from optuna.study._tell import _tell_with_warning
except ImportError:  # pragma: no cover - depends on the installed Optuna
    _tell_with_warning = None  # type: ignore[assignment]

from search_space.spec import SpecError, StudySpec, parse_spec
from search_space.suggest import MissingPackage, make_pruner, make_sampler, suggest_config
from service.db.outage import db_retry, describe_db_error, is_db_outage
from service.settings import Settings
from service.store import Claim, NotFound, RunStatus, Store
from workers.optuna_cache import known_trial, started_trials, undo_started, worker_storage

if TYPE_CHECKING:
    from workers.worker import SlotOptions

log = logging.getLogger(__name__)

SKIP_STUDY_S = 600.0  # how long a machine that cannot run a study leaves it to the others
LOG_TAIL_CHARS = 20_000
DATA_CACHE_SIZE = 2  # decoded datasets kept per process (each may also hold a GPU copy)
STUDY_CACHE_SIZE = 16  # loaded Optuna studies (with their trial caches) kept per process


# -- what needs torch -----------------------------------------------------------------------
class DataMissing(RuntimeError):
    """The study's data cannot be found on this worker; the message says how to provide it."""


class Training:
    """The torch side of a trial (data, training, pre-screen); the storage benchmark swaps it."""

    def device_description(self, gpu_label: str) -> str:
        """What the workers page shows, e.g. "cuda:1 (NVIDIA H100 80GB HBM3)" or "cpu"."""
        raise NotImplementedError

    def load_data(self, dataset_cfg: dict[str, Any]) -> Any:
        """The decoded splits a config's "dataset" names; DataMissing when not found."""
        raise NotImplementedError

    def prescreen(self, config: dict[str, Any]) -> tuple[bool, str | None]:
        """(ok, reason): whether the activation is worth training at all."""
        raise NotImplementedError

    def train(
        self,
        config: dict[str, Any],
        data: Any,
        on_epoch: Callable[[Any], None],
        should_stop: Callable[[], bool],
    ) -> Any:
        """Train one seed; returns a TrialRecord (raises TrialFailure, TrialPruned, …)."""
        raise NotImplementedError

    @staticmethod
    def default(settings: Settings, options: SlotOptions) -> Training:
        """The real thing: workers.train on this slot's device."""
        return TorchTraining(settings, options)


class TorchTraining(Training):
    """workers.train / workers.data / search_space.curves on one device, data cached per process."""

    def __init__(self, settings: Settings, options: SlotOptions) -> None:
        import torch  # only the training side pays for torch

        if options.threads:
            torch.set_num_threads(options.threads)
        self.settings = settings
        self.device = torch.device("cuda:0" if options.device == "cuda" else "cpu")
        self._data: OrderedDict[str, Any] = OrderedDict()

    def device_description(self, gpu_label: str) -> str:
        """cuda:<physical id> (<name>) or cpu."""
        if self.device.type != "cuda":
            return "cpu"
        import torch

        return f"cuda:{gpu_label or 0} ({torch.cuda.get_device_name(self.device)})"

    def load_data(self, dataset_cfg: dict[str, Any]) -> Any:
        """Decoded once per process per dataset config (then kept, also on the device)."""
        from workers.data import DataUnavailableError, load_dataset

        key = json.dumps(dataset_cfg, sort_keys=True, default=str)
        if key in self._data:
            self._data.move_to_end(key)
        else:
            while len(self._data) >= DATA_CACHE_SIZE:
                self._data.popitem(last=False)  # a dataset (and its GPU copy) no study uses now
            try:
                self._data[key] = load_dataset(
                    dataset_cfg,
                    data=self.settings.data,
                    cache_dir=self.settings.resolved_cache_dir,
                    download=self.settings.download,
                )
            except DataUnavailableError as error:
                raise DataMissing(str(error)) from error
        return self._data[key]

    def prescreen(self, config: dict[str, Any]) -> tuple[bool, str | None]:
        """search_space.curves.prescreen on the config's activation."""
        from search_space.curves import prescreen

        result = prescreen(config["activation"])
        return bool(result.ok), result.reason

    def train(
        self,
        config: dict[str, Any],
        data: Any,
        on_epoch: Callable[[Any], None],
        should_stop: Callable[[], bool],
    ) -> Any:
        """workers.train.train_trial on this slot's device."""
        from workers.train import TrialCancelled, train_trial

        def epoch_callback(report: Any) -> None:
            try:
                on_epoch(report)
            except Stop as stop:
                raise TrialCancelled(stop.reason) from stop

        try:
            return train_trial(
                config, data, self.device, on_epoch=epoch_callback, should_stop=should_stop
            )
        except TrialCancelled as cancelled:
            cause = cancelled.__cause__
            # should_stop() said yes (a second signal): hand the run back.
            raise cause if isinstance(cause, Stop) else Stop("handed_back") from cancelled


# -- one run --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """How a run ended, as far as this worker is concerned."""

    state: str  # complete | pruned | failed | cancelled | handed_back | abandoned | released
    value: float | None = None
    reason: str | None = None
    skip_study: bool = False  # this machine cannot run the study; others may (leave it to them)


class Stop(Exception):
    """Raised from the epoch callback to end a run early; reason says what to do with it.

    Training implementations must let it through unchanged (TorchTraining translates it to and
    from workers.train.TrialCancelled, the one stop signal train_trial passes through).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # cancelled | abandoned | handed_back


@dataclass
class _Reports:
    """Epoch reports not yet stored (the database was unreachable); stored in order later."""

    epochs: list[Any] = field(default_factory=list)
    optuna: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class TrialRunner:
    """Runs claimed runs for one worker process (keeps loaded Optuna studies per process)."""

    store: Store
    settings: Settings
    worker_id: str
    training: Training
    hostname: str = field(default_factory=socket.gethostname)  # as the worker registered itself
    stopping: threading.Event = field(default_factory=threading.Event)  # finish epoch, hand back
    aborting: threading.Event = field(default_factory=threading.Event)  # hand back now
    _studies: dict[str, optuna.Study] = field(default_factory=dict, repr=False)

    def run(self, claim: Claim) -> Outcome:
        """Train a claimed run to its end and store everything; never raises for a bad trial."""
        try:
            spec = parse_spec(claim.spec)
        except SpecError as error:
            return self._refuse(claim, f"the stored spec is no longer valid: {error}")
        try:
            data = self.training.load_data(dataset_config(spec))
        except DataMissing as error:
            return self._refuse_here(claim, str(error))
        except Exception as error:  # unreadable images, a wrong class count, ...
            log.exception("study %s: loading its data failed", claim.study_id)
            return self._refuse_here(claim, f"its data could not be loaded: {_describe(error)}")
        try:
            study = self._study(claim, spec)
            trial = db_retry(
                lambda: self._trial(study, claim), "create the Optuna trial", stop=self.stopping
            )
        except ImportError as error:
            # A package the sampler or pruner needs is missing on this machine (make_sampler
            # imports them up front): like missing data, other machines may have it.
            log.debug("study %s: an import failed", claim.study_id, exc_info=True)
            return self._refuse_here(claim, missing_package_message(error, spec))
        except Exception as error:
            # The sampler refuses this study (e.g. a grid without all parameters fixed): no
            # trial can ever start, so the owner is told instead of every worker failing forever.
            log.exception("study %s: Optuna could not create a trial", claim.study_id)
            return self._refuse(claim, f"Optuna could not create a trial: {_describe(error)}")
        try:
            config = db_retry(
                lambda: suggest_config(trial, spec), "suggest the parameters", stop=self.stopping
            )
        except Exception as error:
            return self._failed_before_training(claim, study, trial, error)
        params = dict(trial.params)
        family = str(config["activation"]["family"])
        self._attach(claim, trial, family, config)
        log.info(
            "run %s: study %s trial #%s attempt %s started (%s) %s",
            claim.run_id, claim.study_id, trial.number, claim.attempt,
            family, _short(params),
        )  # fmt: skip
        return _Attempt(self, claim, study, trial, config, data).run()

    def _failed_before_training(
        self, claim: Claim, study: optuna.Study, trial: optuna.Trial, error: Exception
    ) -> Outcome:
        """The trial exists but its config could not be made: store it as an error, go on."""
        trace = traceback.format_exc()
        self._attach(claim, trial, None, None)
        attempt = _Attempt(self, claim, study, trial, {}, None)
        return attempt._fail("error", f"no trial config: {_describe(error)}", None, trace)

    def _attach(
        self,
        claim: Claim,
        trial: optuna.Trial,
        family: str | None,
        config: dict[str, Any] | None,
    ) -> None:
        params = dict(trial.params)
        db_retry(
            lambda: self.store.runs.attach_trial(
                claim.run_id,
                trial_id=trial._trial_id,
                number=trial.number,
                params=params,
                family=family,
                config=config,
            ),
            "attach the trial",
            stop=self.stopping,
        )

    def _refuse_here(self, claim: Claim, message: str) -> Outcome:
        """This machine cannot run the study (its data, a package): fail it only if no other can."""
        log.error("study %s cannot run on %s: %s", claim.study_id, self.hostname, message)
        db_retry(
            lambda: self.store.runs.release(claim.run_id), "release the run", stop=self.stopping
        )
        failed = db_retry(
            lambda: self.store.studies.cannot_run_on(
                claim.study_id, self.hostname, message, self.settings.grace_s
            ),
            "record that this machine cannot run the study",
            stop=self.stopping,
        )
        if not failed:
            log.warning(
                "study %s is left to workers on other machines; skipped here for %.0f s",
                claim.study_id, SKIP_STUDY_S,
            )  # fmt: skip
        return Outcome("released", reason=message, skip_study=not failed)

    def _refuse(self, claim: Claim, message: str) -> Outcome:
        """The study cannot run here at all: fail it with the message, leave no run behind."""
        log.error("study %s cannot run: %s", claim.study_id, message)
        # Release first: a released retry goes back to the queue, which failing then cancels.
        db_retry(
            lambda: self.store.runs.release(claim.run_id), "release the run", stop=self.stopping
        )
        db_retry(
            lambda: self.store.studies.fail(claim.study_id, message),
            "fail the study",
            stop=self.stopping,
        )
        return Outcome("released", reason=message)

    def _study(self, claim: Claim, spec: StudySpec) -> optuna.Study:
        study = self._studies.pop(claim.optuna_name, None)
        if study is None:
            while len(self._studies) >= STUDY_CACHE_SIZE:
                self._studies.pop(next(iter(self._studies)))  # least recently used first
            study = db_retry(
                lambda: optuna.load_study(
                    study_name=claim.optuna_name,
                    storage=worker_storage(self.store.db.optuna),
                    sampler=make_sampler(process_sampler_spec(spec, claim.optuna_name)),
                    pruner=make_pruner(spec),
                ),
                "load the Optuna study",
                stop=self.stopping,
            )
        self._studies[claim.optuna_name] = study  # (re)inserted last: most recently used
        return study

    @staticmethod
    def _trial(study: optuna.Study, claim: Claim) -> optuna.Trial:
        with started_trials(study) as started:
            try:
                if claim.params is None:
                    return study.ask()
                return retry_trial(study, claim.params, claim.retry_of)
            except Exception as error:
                # Built part-way (sampler error, database lost): no trial may stay RUNNING
                # without a run, or TPE's constant liar counts it as in flight for ever.
                if started:
                    _undo_started(study, started, error)
                raise


def _undo_started(study: optuna.Study, started: list[tuple[int, bool]], error: Exception) -> None:
    try:
        db_retry(
            lambda: undo_started(
                study, started, f"the trial could not be built: {_describe(error)}"
            ),
            "undo a trial that could not be built",
        )
    except Exception:
        log.exception("trials %s could not be undone", [trial_id for trial_id, _ in started])


def process_sampler_spec(spec: StudySpec, optuna_name: str) -> StudySpec:
    """The spec with the sampler seed this worker process must use.

    Every worker process has its own sampler. Seeded TPE and random samplers draw per trial
    number (search_space.suggest.PerTrialSeedSampler), so every process keeps the spec's seed.
    QMC's sequence is indexed by trial and must be scrambled identically everywhere, so all
    processes share one seed (derived from the study when the spec sets none). CMA-ES and the
    grid's tie-breaks would propose the same parameters in every process with one shared seed,
    so theirs is offset per process.
    """
    seed = spec.sampler.seed
    if spec.sampler.name in ("tpe", "random"):
        return spec
    if spec.sampler.name == "qmc":
        seed = seed if seed is not None else zlib.crc32(optuna_name.encode()) & 0x7FFFFFFF
    elif seed is not None:
        seed = (seed + zlib.crc32(f"{os.getpid()}-{uuid.uuid4()}".encode())) & 0x7FFFFFFF
    if seed == spec.sampler.seed:
        return spec
    sampler = spec.sampler.model_copy(update={"seed": seed})
    return spec.model_copy(update={"sampler": sampler})


def retry_trial(study: optuna.Study, params: dict[str, Any], retry_of: int | None) -> optuna.Trial:
    """A new running trial whose suggestions return exactly `params` (a lost attempt's).

    Optuna's own mechanism for fixed parameters (what enqueue_trial uses) is the system
    attribute "fixed_params"; creating the trial RUNNING instead of WAITING keeps other
    workers' ask() from taking it. The study's own (cached) storage must create it, so that
    later writes through that cache know the trial.
    """
    template = FrozenTrial(
        number=-1,  # the storage numbers it
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={"fixed_params": params, "actsearch_retry_of_run": retry_of},
        intermediate_values={},
        trial_id=-1,
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, trial_id)


def missing_package_message(error: ImportError, spec: StudySpec) -> str:
    """What this machine lacks for the study and how to install it, from an ImportError.

    MissingPackage (make_sampler) says so itself; another ImportError (one Optuna raised) is
    named by the module it could not import, found along its causes.
    """
    if isinstance(error, MissingPackage):
        return str(error)
    name: str | None = None
    current: BaseException | None = error
    while current is not None and name is None:
        name = getattr(current, "name", None)
        current = current.__cause__ or current.__context__
    needed_by = f"the {spec.sampler.name} sampler or the {spec.pruner.name} pruner"
    if name is None:
        return f"this machine cannot import what {needed_by} needs ({_describe(error)})"
    package = name.split(".")[0]
    return (
        f"this machine lacks the Python package {package!r} that {needed_by} needs: "
        f"pip install {package} ({_describe(error)})"
    )


def dataset_config(spec: StudySpec) -> dict[str, Any]:
    """The "dataset" part of every trial config of a study (datasets are never searched)."""
    dataset = spec.dataset
    return dataset.model_dump(mode="json") if hasattr(dataset, "model_dump") else dict(dataset)


class _Attempt:
    """One run from its first epoch to its stored outcome."""

    def __init__(
        self,
        runner: TrialRunner,
        claim: Claim,
        study: optuna.Study,
        trial: optuna.Trial,
        config: dict[str, Any],
        data: Any,
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self.claim = claim
        self.study = study
        self.trial = trial
        self.config = config
        self.data = data
        self.seeds = max(1, int(config.get("seeds", 1) or 1))
        self.seed_index = 0
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
        ok, reason = self.runner.training.prescreen(self.config)
        if not ok:
            return self._fail("rejected", reason or "rejected by the pre-screen", None, None)
        records: list[Any] = []
        try:
            for index in range(self.seeds):
                self.seed_index = index
                seed_config = {**self.config, "seed": int(self.config.get("seed", 0)) + index}
                seed_config["seeds"] = 1
                records.append(
                    self.runner.training.train(
                        seed_config, self.data, self._on_epoch, self._should_stop
                    )
                )
        except optuna.TrialPruned:
            return self._pruned()
        except Stop as stop:
            return self._stopped(stop.reason)
        except Exception as error:
            return self._failed(error)
        return self._complete(records)

    # -- during training --------------------------------------------------------------------
    def _should_stop(self) -> bool:
        return self.runner.aborting.is_set()

    def _on_epoch(self, report: Any) -> None:
        last = report.epoch == report.epochs - 1 and self.seed_index == self.seeds - 1
        if self.seed_index == 0:
            log.info(
                "run %s epoch %d/%d: loss %.4f val_acc %.4f %.0f img/s",
                self.run_id, report.epoch + 1, report.epochs, report.train_loss,
                report.val_acc, report.img_per_s,
            )  # fmt: skip
            self.last_val, self.last_epoch = report.val_acc, report.epoch
            self.pending.epochs.append(report)
            self.pending.optuna.append((report.epoch, float(report.val_acc)))
            self._stop_if_asked(self._flush(), last)
            # At the last epoch of the last seed pruning saves nothing and would file a whole
            # result as pruned (TPE then ranks it below every complete trial): report only.
            prune = self._report_to_optuna(consult_pruner=not last)
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
        if reason == "cancelled":
            raise Stop("cancelled")
        if reason is not None:
            raise Stop("abandoned")  # reaped meanwhile: its retry belongs to another worker
        if self.runner.stopping.is_set() and not last:
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
        def write() -> RunStatus:
            return self.store.runs.report_epoch(
                self.run_id,
                report.epoch,
                train_loss=_finite(report.train_loss),
                val_acc=_finite(report.val_acc),
                img_per_s=_finite(report.img_per_s),
                elapsed_s=_finite(report.elapsed_s),
                worker_id=self.runner.worker_id,
            )

        try:
            return db_retry(
                write, "store an epoch", attempts=0 if wait else 1, stop=self.runner.aborting
            )
        except NotFound as error:
            raise Stop("abandoned") from error  # the study was deleted meanwhile

    def _report_to_optuna(self, *, consult_pruner: bool = True) -> bool:
        """Report buffered values to Optuna; whether the pruner says stop (False if unreachable)."""
        try:
            while self.pending.optuna:
                epoch, value = self.pending.optuna[0]
                self.trial.report(value, epoch)
                self.pending.optuna.pop(0)
            if not consult_pruner or isinstance(self.study.pruner, optuna.pruners.NopPruner):
                return False  # spares the pruner's read of every trial in the study
            return bool(self.trial.should_prune())
        except optuna.exceptions.UpdateFinishedTrialError as error:
            raise Stop("abandoned") from error  # reaped meanwhile: Optuna's trial is failed
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
    def _complete(self, records: list[Any]) -> Outcome:
        values = [float(r.val_acc) for r in records]
        tests = [float(r.test_acc) for r in records]
        record = records[0].to_json()
        value_std = None
        if len(records) > 1:
            value_std = statistics.pstdev(values)
            record["seeds"] = [
                {
                    "seed": int(self.config.get("seed", 0)) + i,
                    "val_acc": r.val_acc,
                    "best_val_acc": r.best_val_acc,
                    "test_acc": r.test_acc,
                    "duration_s": r.duration_s,
                }
                for i, r in enumerate(records)
            ]
        value = statistics.fmean(values)
        stored = self._finish(
            state="complete",
            value=value,
            value_std=value_std,
            test_acc=statistics.fmean(tests),
            record=record,
        )
        if stored:
            self._tell(value)
        log.info(
            "run %s complete: val_acc %.4f test_acc %.4f in %.1f s",
            self.run_id, value, statistics.fmean(tests), time.monotonic() - self.started,
        )  # fmt: skip
        return Outcome("complete", value=value)

    def _pruned(self) -> Outcome:
        self._flush_final()
        if self._finish(state="pruned", value=self.last_val):
            self._tell(None, TrialState.PRUNED)
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
            if self._finish(
                state="cancelled",
                value=self.last_val,
                failure_reason="cancelled",
                failure_message="the study was cancelled",
                failure_epoch=self.last_epoch,
            ):
                self._tell(None, TrialState.FAIL)
            log.info("run %s cancelled with its study", self.run_id)
            return Outcome("cancelled", reason="cancelled")
        db_retry(
            lambda: self.store.runs.hand_back(self.run_id, "worker stopped (signal)"),
            "hand the run back",
            stop=self.runner.aborting,
        )
        log.info("run %s handed back for a retry with the same parameters", self.run_id)
        return Outcome("handed_back", reason="worker_lost")

    def _failed(self, error: Exception) -> Outcome:
        kind = getattr(error, "kind", None)
        if kind is None:  # not a TrialFailure: a bug or an unexpected error in this worker
            trace = traceback.format_exc()
            return self._fail("error", f"{type(error).__name__}: {error}", self.last_epoch, trace)
        message = str(getattr(error, "message", error))
        details: str | None = getattr(error, "details", None)
        epoch: int | None = getattr(error, "epoch", None)
        return self._fail(str(kind), message, epoch, details or message)

    def _fail(self, reason: str, message: str, epoch: int | None, details: str | None) -> Outcome:
        self._flush_final()
        if self._finish(
            state="failed",
            value=None,
            failure_reason=reason,
            failure_message=message,
            failure_epoch=epoch,
            log_tail=(details or message)[-LOG_TAIL_CHARS:],
        ):
            self._tell(None, TrialState.FAIL)
        where = f" at epoch {epoch + 1}" if epoch is not None else ""
        log.warning("run %s failed (%s%s): %s", self.run_id, reason, where, message)
        return Outcome("failed", reason=reason)

    def _finish(self, *, state: str, value: float | None, **fields: Any) -> bool:
        """Store the outcome (waiting for the database); False if the run was reaped meanwhile."""
        if state == "complete":
            self._flush_final()
        try:
            return bool(
                db_retry(
                    lambda: self.store.runs.finish(
                        self.run_id, state=state, value=_finite(value), **fields
                    ),
                    "store the run's outcome",
                    stop=self.runner.aborting,
                )
            )
        except NotFound:
            log.warning("run %s is gone (study deleted?); its outcome is dropped", self.run_id)
            return False

    def _tell(self, value: float | None, state: TrialState | None = None) -> None:
        """Report buffered epochs to Optuna, then finish its trial (waiting for the database)."""

        def tell() -> None:
            while self.pending.optuna:
                epoch, reported = self.pending.optuna[0]
                self.trial.report(reported, epoch)
                self.pending.optuna.pop(0)
            values = _finite(value) if state is None else None
            tell_optuna(self.study, self.trial, values, state)

        try:
            db_retry(tell, "tell Optuna the result", stop=self.runner.aborting)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("run %s: its Optuna trial was already finished", self.run_id)
        except Exception:
            log.exception("run %s: Optuna could not be told the result", self.run_id)


def tell_optuna(
    study: optuna.Study, trial: optuna.Trial, value: float | None, state: TrialState | None
) -> None:
    """`study.tell(..., skip_if_finished=True)` without the re-read that builds its return value.

    `Study.tell` ends by loading the finished trial with its five relations again (six
    statements, about a tenth of a trial's bookkeeping) only to return a copy nobody here uses.
    Its body, `_tell_with_warning`, does everything else: the state check, the sampler's
    `after_trial` and the write. Its read of the trial for the state check is served from the
    `Trial`'s own copy once the trial's state column says it still runs (`known_trial`). An
    Optuna without it gets the public call.
    """
    if _tell_with_warning is None:
        study.tell(trial, value, state=state, skip_if_finished=True)
        return
    with known_trial(study, trial):  # its state check reads one column, not the whole trial
        _tell_with_warning(
            study=study, trial=trial, value_or_values=value, state=state, skip_if_finished=True
        )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _short(params: dict[str, Any]) -> str:
    text = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    return text if len(text) < 300 else text[:297] + "..."
