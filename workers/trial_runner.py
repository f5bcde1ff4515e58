"""One claimed run → one Optuna trial → an Attempt that trains it (workers.attempt).

Order of writes, so that nothing is half-written: the data are resolved before Optuna is asked
(missing data fail the study and release the claim without a trace); then the trial is created
(a retry gets a trial fixed to the lost attempt's parameters) and attached to the run with the
trial's canonical config (search_space.contract: every default stated). A trial created and
never attached (its worker died in between) is failed by service.store.reconcile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import optuna

from search_space.contract import DatasetConfig
from search_space.optuna_access import (
    create_running_trial,
    held_writes,
    holding_params,
    release_writes,
    started_trials,
    trial_id_of,
    undo_started,
    worker_storage,
)
from search_space.samplers import MissingPackage, make_pruner, make_sampler
from search_space.spec import SpecError, StudySpec, parse_spec
from search_space.suggest import suggest_trial
from service.db.outage import db_retry
from service.store import Claim
from workers.attempt import Attempt, Outcome, RunContext
from workers.repeats import Identity, Repeats
from workers.training import DataMissing

log = logging.getLogger(__name__)

SKIP_STUDY_S = 600.0  # how long a machine that cannot run a study leaves it to the others
STUDY_CACHE_SIZE = 16  # loaded Optuna studies (with their trial caches) kept per process


@dataclass
class TrialRunner(RunContext):
    """Runs claimed runs for one worker process (keeps loaded Optuna studies per process)."""

    _studies: dict[str, optuna.Study] = field(default_factory=dict, repr=False)

    def run(self, claim: Claim) -> Outcome:
        """Train a claimed run to its end and store everything; never raises for a bad trial."""
        try:
            spec = parse_spec(claim.spec)
        except SpecError as error:
            return self._refuse(claim, f"the stored spec is no longer valid: {error}")
        self.progress.phase("data")
        loading = time.monotonic()
        try:
            data = self.training.load_data(DatasetConfig.model_validate(spec.dataset.model_dump()))
        except DataMissing as error:
            return self._refuse_here(claim, str(error))
        except Exception as error:  # unreadable images, a wrong class count, ...
            log.exception("study %s: loading its data failed", claim.study_id)
            return self._refuse_here(claim, f"its data could not be loaded: {_describe(error)}")
        load_s = time.monotonic() - loading  # decoding, or nothing when the data is cached
        try:
            study = self._study(claim, spec)
            trial = db_retry(
                lambda: self._trial(study, claim, self.stopping),
                "create the Optuna trial",
                stop=self.stopping,
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
            return self._run_trial(claim, spec, study, trial, data, load_s)
        finally:
            release_writes(study, trial)

    def _run_trial(
        self,
        claim: Claim,
        spec: StudySpec,
        study: optuna.Study,
        trial: optuna.Trial,
        data: Any,
        load_s: float,
    ) -> Outcome:
        # The trial's Optuna writes are held from here on and written in our transactions: its
        # parameters with the attach, each reported value with its epoch, its end with the
        # run's outcome (search_space.optuna_access.HeldWrites): one commit each, not two.
        try:
            with holding_params(study, trial):
                config = db_retry(
                    lambda: suggest_trial(trial, spec), "suggest the parameters", stop=self.stopping
                )
        except Exception as error:
            return self._failed_before_training(claim, study, trial, error)
        params = dict(trial.params)
        family = config.activation.family
        self._attach(claim, study, trial, family, config.canonical())
        log.info(
            "run %s: study %s trial #%s attempt %s started (%s) %s",
            claim.run_id, claim.study_id, trial.number, claim.attempt,
            family, _short(params),
        )  # fmt: skip
        repeats = Repeats(
            self.store,
            study_id=claim.study_id,
            run_id=claim.run_id,
            config=config,
            identity=Identity(*self.training.identity(data)),
            repeats=spec.repeats,
            scope=spec.reuse,
            stop=self.stopping,
        )
        return Attempt(
            self, claim, study, trial, config, data, repeats, load_s, cost=spec.cost_objective
        ).run()

    def _failed_before_training(
        self, claim: Claim, study: optuna.Study, trial: optuna.Trial, error: Exception
    ) -> Outcome:
        """The trial exists but its config could not be made: store it as an error, go on."""
        trace = traceback.format_exc()
        self._attach(claim, study, trial, None, None)
        attempt = Attempt(self, claim, study, trial, None, None)
        return attempt._fail("error", f"no trial config: {_describe(error)}", None, trace)

    def _attach(
        self,
        claim: Claim,
        study: optuna.Study,
        trial: optuna.Trial,
        family: str | None,
        config: dict[str, Any] | None,
    ) -> None:
        """Record the trial with its run; its held parameters are stored in that transaction."""
        params = dict(trial.params)
        held = held_writes(study, trial)
        db_retry(
            lambda: self.store.runs.attach_trial(
                claim.run_id,
                trial_id=trial_id_of(trial),
                number=trial.number,
                params=params,
                family=family,
                config=config,
                also=None if held is None else held.write,
            ),
            "attach the trial",
            stop=self.stopping,
        )
        if held is not None:
            held.written()

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
    def _trial(
        study: optuna.Study, claim: Claim, stop: threading.Event | None = None
    ) -> optuna.Trial:
        with started_trials(study) as started:
            try:
                if claim.params is None:
                    return study.ask()
                return create_running_trial(
                    study, {"fixed_params": claim.params, "actsearch_retry_of_run": claim.retry_of}
                )
            except Exception as error:
                # Built part-way (sampler error, database lost): no trial may stay RUNNING
                # without a run, or TPE's constant liar counts it as in flight for ever.
                if started:
                    _undo_started(study, started, error, stop)
                raise


def _undo_started(
    study: optuna.Study,
    started: list[tuple[int, bool]],
    error: Exception,
    stop: threading.Event | None,
) -> None:
    try:
        db_retry(
            lambda: undo_started(
                study, started, f"the trial could not be built: {_describe(error)}"
            ),
            "undo a trial that could not be built",
            stop=stop,
        )
    except Exception:
        log.exception("trials %s could not be undone", [trial_id for trial_id, _ in started])


def process_sampler_spec(spec: StudySpec, optuna_name: str) -> StudySpec:
    """The spec with the sampler seed this worker process must use.

    Every worker process has its own sampler. Seeded TPE and random samplers draw per trial
    number (search_space.samplers.PerTrialSeedSampler), so every process keeps the spec's seed.
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


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _short(params: dict[str, Any]) -> str:
    text = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    return text if len(text) < 300 else text[:297] + "..."
