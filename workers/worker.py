"""One worker slot: register, heartbeat, then claim → train → report → finish until told to stop.

A background thread heartbeats (the worker and its current run) every `heartbeat_s` and, at the
same beat, fails runs whose worker has been silent for `grace_s` (`reap_lost`): every live worker
reaps, busy or idle, so a lost run is retried within grace + one heartbeat. At that beat it also
sets Optuna trials left RUNNING behind ended runs to the runs' states (service.store.reconcile). When nothing is
runnable the loop sleeps about a second (jittered); database outages are waited out with back-off.

Signals: the first SIGTERM/SIGINT lets the current epoch finish, then the run is handed back (a
retry with the same parameters is queued at once) — unless that epoch was the run's last, in which
case the run is finished normally. A second signal aborts the running epoch and hands back too.
SIGHUP, or the supervisor's pid going away, means the supervisor is gone: the slot hands its run
back at once and exits (no orphan trains on). A wait for the database before training ends at
the first signal, a wait to store results at the second. A database error that waiting cannot
fix (a missing table, a read-only file) stops the slot with FatalWorkerError.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from types import FrameType
from typing import Any

from service.db import (
    DatabaseWaitStopped,
    db_retry,
    describe_db_error,
    is_db_outage,
    is_permanent_db_error,
    is_sqlite,
    make_engine,
    make_sessionmaker,
    optuna_storage,
)
from service.migrate import SchemaOutOfDate, check_schema
from service.settings import Settings
from service.store import Claim, Database, Store, Studies, Users
from service.store.reconcile import Reconciler
from service.store.runs import Runs
from workers.options import SlotOptions
from workers.progress import LiveProgress
from workers.training import Training
from workers.trial_runner import SKIP_STUDY_S, TrialRunner

log = logging.getLogger(__name__)

IDLE_S = 1.0  # base pause when nothing is runnable; jittered so idle workers do not poll in step
MAX_BACKOFF_S = 30.0
PARENT_POLL_S = 1.0  # how often a slot checks that its supervisor is still its parent


class FatalWorkerError(RuntimeError):
    """A problem restarting will not fix (schema out of date, bad URL): the message says what to do."""


def permanent_db_message(error: BaseException) -> str:
    """What to tell the operator about a database error that no retry can fix."""
    return (
        f"the database refused this worker for good ({describe_db_error(error)}): a missing "
        "table or column, a read-only or damaged database, or a missing permission; retrying "
        "cannot fix it, so the worker stops. Check the database that ACTSEARCH_DATABASE_URL / "
        "--database-url names (`actsearch db upgrade` builds the schema of an empty database) "
        "and start the worker again"
    )


# What PostgreSQL says (after "FATAL:") when it refuses the login itself: unknown user or
# database, wrong password, a host pg_hba.conf does not admit. Waiting cannot fix these.
LOGIN_REFUSALS = (
    "password authentication failed",
    "authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
)


def refused_login(error: BaseException) -> str | None:
    """The server's refusal, when a connection failed because the login was refused."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for line in str(current).splitlines():
            _, fatal, message = line.partition("FATAL:")
            if fatal and any(marker in message for marker in LOGIN_REFUSALS):
                return message.strip()
        current = current.__cause__ or current.__context__
    return None


def new_worker_id(slot: int) -> str:
    """A worker id unique to this process: host, pid, slot and a random suffix."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-s{slot}-{uuid.uuid4().hex[:6]}"


def open_worker_store(url: str, *, max_attempts: int = 3) -> Store:
    """The store of one worker process: small pools, and no ping before each transaction.

    A ping costs a round trip per transaction (about twenty per trial). A worker does not need
    it: every one of its writes is retried when its connection turns out to be gone (the pool
    then reconnects), which is what the ping would have prevented.
    """
    pool: dict[str, Any] = {"pool_pre_ping": False}
    if not is_sqlite(url):
        pool.update(pool_size=2, max_overflow=4)  # the main thread plus the heartbeat thread
    engine = make_engine(url, **pool)
    try:
        check_schema(engine)
        storage = optuna_storage(url, engine_kwargs=None if is_sqlite(url) else pool)
    except BaseException:
        engine.dispose()
        raise
    db = Database(url=url, engine=engine, sessions=make_sessionmaker(engine), _optuna=storage)
    return Store(
        db=db, studies=Studies(db), runs=Runs(db, max_attempts=max_attempts), users=Users(db)
    )


def package_version() -> str:
    """The installed actsearch version (shown on the workers page)."""
    try:
        return importlib.metadata.version("actsearch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class SlotWorker:
    """The process loop of one slot; build it, then call run()."""

    def __init__(
        self,
        settings: Settings,
        options: SlotOptions,
        *,
        training: Training | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.worker_id = new_worker_id(options.slot)
        self.stopping = threading.Event()  # first signal: stop after this epoch
        self.aborting = threading.Event()  # second signal: stop within a training step
        self.trials = 0
        self._skipped: dict[int, float] = {}  # study -> monotonic time until which it is skipped
        self._training = training
        self._store = store
        self._current_run: int | None = None
        self._beat_stop = threading.Event()
        self.progress = LiveProgress()  # the current run's, sent with each heartbeat
        self._signals = 0

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> int:
        """Register, heartbeat and process runs until stopped or --max-trials; returns 0.

        FatalWorkerError when the database fails in a way waiting cannot fix.
        """
        self._install_signal_handlers()
        self._watch_parent()
        try:
            store = self._store or self._open_store()
            try:
                self._work(store)
            finally:
                if self._store is None:
                    store.dispose()
        except DatabaseWaitStopped as stopped:
            log.info(
                "stopped while waiting for the database to %s (%s)",
                stopped.what,
                describe_db_error(stopped.error),
            )
        except Exception as error:
            if is_permanent_db_error(error):
                raise FatalWorkerError(permanent_db_message(error)) from error
            raise
        log.info("worker %s stopped after %d trial(s)", self.worker_id, self.trials)
        return 0

    def _work(self, store: Store) -> None:
        """Register, start the heartbeat, run the loop; mark the worker stopped at the end."""
        training = self._training or self._torch_training()
        hostname = socket.gethostname()
        runner = TrialRunner(
            store=store,
            settings=self.settings,
            worker_id=self.worker_id,
            training=training,
            hostname=hostname,
            stopping=self.stopping,
            aborting=self.aborting,
            progress=self.progress,
        )
        db_retry(
            lambda: store.workers.register(
                self.worker_id,
                hostname=hostname,
                pid=os.getpid(),
                device=training.device_description(self.options.gpu_label),
                slot=self.options.slot,
                version=package_version(),
            ),
            "register the worker",
            stop=self.stopping,
        )
        log.info("worker %s ready on %s", self.worker_id, training.device_description(""))
        beat = threading.Thread(target=self._beat, args=(store,), name="heartbeat", daemon=True)
        beat.start()
        failed = True
        try:
            self._loop(store, runner)
            failed = False
        finally:
            self._beat_stop.set()
            beat.join(timeout=10)
            self._mark_told(store, runner)
            # After a database error one try is enough: waiting would only delay the exit.
            self._stopped(store, attempts=1 if failed else 5)

    @staticmethod
    def _mark_told(store: Store, runner: TrialRunner) -> None:
        """Record the told runs no claim took along (harmless if it fails: the reconciler
        finds their trials finished already and marks them)."""
        try:
            store.runs.mark_synced(runner.told)
        except Exception as error:
            log.warning("runs %s: not marked synced (%s)", runner.told, describe_db_error(error))
        else:
            runner.told.clear()

    def _torch_training(self) -> Training:
        """The real training side (imported here: torch loads only in a slot that trains)."""
        from workers.torch_training import TorchTraining

        return TorchTraining(self.settings, self.options)

    def request_stop(self) -> None:
        """Stop after the current epoch (what SIGTERM does)."""
        self.stopping.set()

    @property
    def current_run(self) -> int | None:
        """The run this slot is training now, None while idle (read by workers.ray_slot)."""
        return self._current_run

    def _open_store(self) -> Store:
        url = self.settings.resolved_database_url

        def attempt() -> Store | str:
            try:
                return open_worker_store(url, max_attempts=self.settings.max_attempts)
            except Exception as error:
                refusal = refused_login(error)
                if refusal is None:
                    raise  # an outage is retried below; anything else ends the slot
                return refusal  # returned, not raised: db_retry would see an outage and wait

        try:
            opened = db_retry(attempt, "open the database", attempts=0, stop=self.stopping)
        except SchemaOutOfDate as error:
            raise FatalWorkerError(str(error)) from error
        if isinstance(opened, str):
            raise FatalWorkerError(
                f"the database server refused this worker's login ({opened}): check the user, "
                "password and database name in --database-url / ACTSEARCH_DATABASE_URL (a new "
                "PostgreSQL database must be created, then `actsearch db upgrade`)"
            )
        return opened

    def _stopped(self, store: Store, attempts: int) -> None:
        try:
            db_retry(
                lambda: store.workers.stopped(self.worker_id),
                "mark the worker stopped",
                attempts=attempts,
            )
        except Exception as error:
            log.warning(
                "could not mark worker %s stopped: %s", self.worker_id, describe_db_error(error)
            )

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded in a test or a thread: the owner calls request_stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        hangup = getattr(signal, "SIGHUP", None)  # not on Windows
        if hangup is not None:
            signal.signal(hangup, self._on_hangup)

    def _on_hangup(self, signum: int, _frame: FrameType | None) -> None:
        # What the supervisor's death sends (PR_SET_PDEATHSIG) and what it sends when it is
        # told to stop at once: nobody waits for this epoch, so hand the run back now.
        self._supervisor_gone(
            f"{signal.Signals(signum).name}: the supervisor is gone or says stop now"
        )

    def _supervisor_gone(self, why: str) -> None:
        if not self.aborting.is_set():
            log.warning("%s; handing the running trial back now and stopping", why)
        self.stopping.set()
        self.aborting.set()

    def _watch_parent(self) -> None:
        """Stop at once when the supervisor goes away (also where PR_SET_PDEATHSIG is missing)."""
        parent = self.options.parent_pid
        if not parent:
            return

        def watch() -> None:
            while os.getppid() == parent:
                if self.aborting.wait(PARENT_POLL_S):
                    return
            self._supervisor_gone(f"the supervisor (pid {parent}) is gone")

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("%s: finishing the current epoch, then stopping (again: stop now)", name)
            self.stopping.set()
        elif self._signals == 2:
            log.info("%s: stopping now; the running trial is handed back", name)
            self.stopping.set()
            self.aborting.set()
        else:
            raise KeyboardInterrupt

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self, store: Store, runner: TrialRunner) -> None:
        failures = 0
        while not self.stopping.is_set() and not self._enough():
            told = list(runner.told)
            try:
                claim = store.runs.claim_next(
                    self.worker_id, self._study_ids(), exclude=self._skipping(), synced=told
                )
                del runner.told[: len(told)]
                failures = 0
            except Exception as error:
                if is_permanent_db_error(error):
                    raise  # waiting cannot fix it: run() stops the slot saying what is wrong
                failures += 1
                self._back_off(error, failures)
                continue
            if claim is None:
                self._idle()
                continue
            self._process(runner, claim)

    def _process(self, runner: TrialRunner, claim: Claim) -> None:
        self.progress.reset()
        self._current_run = claim.run_id
        try:
            outcome = runner.run(claim)
        finally:
            self._current_run = None
            self.progress.reset()
        if outcome.skip_study:  # this machine cannot run it (e.g. no data here); others may
            self._skipped[claim.study_id] = time.monotonic() + SKIP_STUDY_S
        self.trials += 1

    def _skipping(self) -> list[int]:
        now = time.monotonic()
        self._skipped = {study: until for study, until in self._skipped.items() if until > now}
        return list(self._skipped)

    def _enough(self) -> bool:
        limit = self.options.max_trials
        return limit is not None and self.trials >= limit

    def _study_ids(self) -> list[int] | None:
        return list(self.options.studies) if self.options.studies else None

    def _idle(self) -> None:
        pause = min(IDLE_S, self.settings.heartbeat_s) * random.uniform(0.5, 1.5)
        self.stopping.wait(pause)

    def _back_off(self, error: Exception, failures: int) -> None:
        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** min(failures, 10)) * random.uniform(0.8, 1.2)
        if is_db_outage(error):
            log.warning(
                "database unreachable (%s); retrying in %.1f s", describe_db_error(error), delay
            )
        else:
            log.exception("claiming a run failed; retrying in %.1f s", delay)
        self.stopping.wait(delay)

    # -- heartbeats -------------------------------------------------------------------------
    def _heartbeat(self, store: Store) -> None:
        """One beat with the run's live progress; a stop it brings back reaches the trainer."""
        run_id = self._current_run
        progress = self.progress.snapshot() if run_id is not None else None
        status = store.workers.heartbeat(self.worker_id, run_id, progress)
        if status is not None and run_id == self._current_run:
            self.progress.stop_reason = status.stop_reason

    def _beat(self, store: Store) -> None:
        """Background thread: heartbeat (worker and run), reap lost runs, repair Optuna trials,
        move campaigns on."""
        interval = self.settings.heartbeat_s
        # A live worker tells Optuna within moments of storing a run; settle_s leaves it that.
        settle_s = min(self.settings.grace_s / 2, max(2 * interval, 1.0))
        reconciler = Reconciler(store.db, settle_s=settle_s)
        while not self._beat_stop.wait(interval * random.uniform(0.9, 1.0)):
            try:
                self._heartbeat(store)
                # Every live worker reaps, so a lost run is failed within grace + one interval
                # even while all other workers are busy training.
                for run_id in store.runs.reap_lost(self.settings.grace_s):
                    log.warning(
                        "run %s lost its worker (silent > %.0f s)", run_id, self.settings.grace_s
                    )
                reconciler.sweep()
                store.campaigns.advance()  # a campaign whose stage ended gets its next one
            except Exception as error:
                log.warning("heartbeat failed: %s", describe_db_error(error))
