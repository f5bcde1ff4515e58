"""`actsearch worker --ray`: worker slots as Ray actors, as many as the queue asks for.

Ray places, restarts and scales the slots; the database stays the one coordinator (claims,
heartbeats, lost runs), exactly as with `actsearch worker`. The driver connects to a Ray cluster
(`ray.init(address=...)`; with no address, RAY_ADDRESS or a local head) and every `poll_s`:

1. asks each slot actor for its status (workers.ray_slot.SlotActor: state, busy, worker id);
2. reads the queue (service.store.queries.queue: runnable and running trials, one query);
3. turns it into a number of slots (workers.ray_scaling.ScalePolicy, within --max-slots),
   tells the autoscaler (ray.autoscaler.sdk.request_resources) so that KubeRay or a cloud
   autoscaler adds GPU nodes, and starts actors, or releases idle ones once the queue has been
   short of them for --release-after seconds.

Actors restart without limit (`max_restarts=-1`): a crashed loop, a killed process or a lost
node brings the slot back, on another node if need be. Their calls are not retried
(`max_task_retries=0`): a status call that fails is just asked again at the next poll. A slot's
run that died with its process is failed and retried by the lost-worker path (heartbeats).

Signals: the first SIGTERM/SIGINT asks every slot to finish its epoch and hand its run back;
the second (or DRAIN_S later) to hand back at once; the third (or ABORT_S later) kills them.
Actors belong to the driver: if the driver dies, Ray ends them, and their runs come back
through the lost-worker path.

Ray is imported inside the functions below, never at module level: `actsearch worker` and the
service import without it (it is the optional extra `actsearch[ray]`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from sqlalchemy import make_url

from service.db import DatabaseWaitStopped, db_retry, describe_db_error
from service.migrate import SchemaOutOfDate
from service.settings import Settings
from service.store import Database
from service.store.queries.queue import QueueDepth, queue_depth
from workers.ray_scaling import RELEASE_AFTER_S, ScalePolicy, SlotShape
from workers.ray_slot import ACTOR_THREADS, SlotActor
from workers.supervisor import EXIT_FATAL

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 120.0  # how long the driver waits for a cluster that is starting
CONNECT_RETRY_S = 3.0
POLL_S = 5.0  # how often the driver reads the queue and its slots' status
STATUS_TIMEOUT_S = 2.0  # a slot that does not answer by then is starting, restarting or lost
RELEASE_S = 30.0  # a released (idle) slot that has not stopped by then is killed
DRAIN_S = 120.0  # after the first signal: slots finish their epoch; then they are told "now"
ABORT_S = 30.0  # after "now": slots that have not handed back and stopped by then are killed


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached: the message says what to do."""


@dataclass(frozen=True)
class DriverOptions:
    """What `actsearch worker --ray` was asked for."""

    address: str = ""  # "" : RAY_ADDRESS or a new local head; "auto": the running cluster
    gpus: str = "auto"  # auto (GPU slots if the cluster has GPUs) | all (GPU slots) | cpu
    per_gpu: int = 1
    cpus_per_slot: float = 1.0
    max_slots: int | None = None  # None: the slots the cluster holds when the driver starts
    min_slots: int = 0
    release_after_s: float = RELEASE_AFTER_S
    studies: tuple[int, ...] | None = None
    poll_s: float = POLL_S


@dataclass
class _Slot:
    """The driver's view of one slot actor."""

    index: int
    handle: Any
    seen: bool = False  # answered a status call once: it was placed and started
    status: dict[str, Any] = field(default_factory=dict)
    leaving_since: float | None = None  # released: asked to stop at this monotonic time
    stop_sent: bool = False  # its stop call went out (only once it has been seen)
    aborted: bool = False

    @property
    def idle(self) -> bool:
        """Safe to release: not placed yet, or placed and not training (as last reported)."""
        return not self.seen or (self.status.get("state") == "running" and not self.status["busy"])


def import_ray() -> Any:
    """The ray module, or RayUnavailable saying how to install it."""
    # Every slot's log lines reach this terminal; Ray would fold similar lines of different
    # slots ("run 4 epoch 1/1 ...") into one "[repeated 3x]".
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError as error:
        raise RayUnavailable(
            "--ray needs Ray: pip install 'actsearch[ray]' (on every node of the cluster, "
            "with the same Ray version)"
        ) from error
    return ray


class RayDriver:
    """Keeps the right number of slot actors on a Ray cluster; run() until stopped."""

    def __init__(self, settings: Settings, options: DriverOptions) -> None:
        self.settings = settings
        self.options = options
        self.requested: list[int] = []  # each slot count asked of the autoscaler, in order
        self.fatal: str | None = None
        self._slots: dict[int, _Slot] = {}
        self._target = 0
        self._stop = threading.Event()
        self._signals = 0
        self._remote: Any = None
        self._shape: SlotShape | None = None

    # -- public -----------------------------------------------------------------------------
    def run(self) -> int:
        """Connect, scale until stopped, drain; 0, or EXIT_FATAL when a slot cannot run."""
        ray = import_ray()
        started = self._connect(ray)
        previous = self._install_signal_handlers()
        try:
            return self._drive(ray)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if started:
                ray.shutdown()

    def request_stop(self) -> None:
        """What a signal does (a second call: hand back now; a third: kill)."""
        self._signals += 1
        self._stop.set()

    def slots(self) -> dict[int, Any]:
        """Each slot's actor handle by slot number (for tests and embedding)."""
        return {index: slot.handle for index, slot in self._slots.items()}

    @property
    def shape(self) -> SlotShape | None:
        """What each slot reserves (known once connected)."""
        return self._shape

    # -- setup ------------------------------------------------------------------------------
    def _connect(self, ray: Any) -> bool:
        """Join the cluster; True when this call started Ray (then run() shuts it down)."""
        if ray.is_initialized():
            return False  # embedded: the caller owns the connection
        address = self.options.address or None
        deadline = time.monotonic() + CONNECT_WAIT_S
        while True:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=True)
                break
            except ConnectionError as error:
                # Started beside `ray start` (a KubeRay head, a Slurm job): the head may still
                # be coming up.
                if time.monotonic() >= deadline or self._stop.wait(CONNECT_RETRY_S):
                    raise RayUnavailable(
                        f"could not reach the Ray cluster at {address!r} in "
                        f"{CONNECT_WAIT_S:.0f} s ({error}): start one with `ray start --head` "
                        "(or give its address, e.g. ray://head:10001), or leave out the address "
                        "to start a local one"
                    ) from error
                log.info("no Ray cluster at %r yet; retrying", address)
        log.info("connected to Ray: %s", _describe_resources(ray.cluster_resources()))
        return True

    def _slot_shape(self, resources: dict[str, float]) -> SlotShape:
        choice = (self.options.gpus or "auto").lower()
        if choice == "cpu" or (choice == "auto" and not resources.get("GPU")):
            if choice == "auto":
                log.info("the cluster has no GPU now: CPU slots (--gpus all waits for GPU nodes)")
            return SlotShape.cpu(self.options.cpus_per_slot)
        return SlotShape.gpu(self.options.per_gpu, self.options.cpus_per_slot)

    def _policy(self, shape: SlotShape, resources: dict[str, float]) -> ScalePolicy:
        max_slots = self.options.max_slots
        if max_slots is None:
            max_slots = max(1, shape.fits(resources), self.options.min_slots)
            log.info("--max-slots not given: %d, what the cluster holds now", max_slots)
        return ScalePolicy(max_slots, self.options.min_slots, self.options.release_after_s)

    def _open_database(self) -> Database:
        url = self.settings.resolved_database_url
        return db_retry(
            lambda: Database.open(url), "open the database", attempts=0, stop=self._stop
        )

    # -- the loop ---------------------------------------------------------------------------
    def _drive(self, ray: Any) -> int:
        resources = ray.cluster_resources()
        self._shape = shape = self._slot_shape(resources)
        policy = self._policy(shape, resources)
        try:
            db = self._open_database()
        except SchemaOutOfDate as error:
            self.fatal = str(error)
            log.error("%s", error)
            return EXIT_FATAL
        except DatabaseWaitStopped:
            return 0
        self._remote = ray.remote(
            **shape.actor_options(),
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=ACTOR_THREADS,
        )(SlotActor)
        log.info(
            "slots of %s each, %d to %d of them as the queue asks (database %s)",
            shape.describe(), policy.min_slots, policy.max_slots,
            make_url(db.url).render_as_string(hide_password=True),
        )  # fmt: skip
        try:
            while not self._stop.is_set() and self.fatal is None:
                self._tick(ray, db, policy)
                self._stop.wait(self.options.poll_s)
        finally:
            try:
                self._drain(ray)
                self._request(ray, 0)
            except Exception:  # Ray itself is gone: its actors went with it
                log.exception("could not stop the slots through Ray")
            db.dispose()
        if self.fatal is not None:
            return EXIT_FATAL
        return 0

    def _tick(self, ray: Any, db: Database, policy: ScalePolicy) -> None:
        self._poll(ray)
        if self.fatal is not None:
            return
        try:
            depth = queue_depth(db, self.options.studies)
        except Exception as error:  # an outage: keep the slots as they are until it passes
            log.warning("could not read the queue: %s", describe_db_error(error))
            return
        target = policy.target(depth, time.monotonic())
        if target != self._target:
            log.info(
                "queue: %d runnable, %d running trial(s): %d slot(s) (at most %d)",
                depth.runnable, depth.running, target, policy.max_slots,
            )  # fmt: skip
            self._target = target
        self._request(ray, target)
        self._scale(ray, target, depth)
        self._finish_leaving(ray)

    def _poll(self, ray: Any) -> None:
        """Ask every slot for its status; drop dead ones; note a slot that cannot run."""
        if not self._slots:
            return
        calls = {slot.handle.status.remote(): slot for slot in self._slots.values()}
        ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=STATUS_TIMEOUT_S)
        for ref in ready:
            slot = calls[ref]
            try:
                slot.status = ray.get(ref)
                slot.seen = True
            except ray.exceptions.ActorDiedError as error:
                self._dead(slot, error)
                continue
            except ray.exceptions.RayError:
                continue  # restarting, or its node is gone and Ray is placing it anew
            if slot.leaving_since is not None:
                self._send_stop(slot)  # released before it first answered (a slow start)
            state = slot.status.get("state")
            if state == "fatal":
                self.fatal = f"slot {slot.index}: {slot.status.get('error')}"
                log.error("%s; stopping every slot", self.fatal)
            elif state == "stopped" and slot.leaving_since is None:
                # Its loop ended without being asked (it should not): replace it.
                log.warning("slot %d stopped by itself; replacing it", slot.index)
                self._leave(slot)

    def _dead(self, slot: _Slot, error: Any) -> None:
        """A slot that will not come back: its constructor failed, or it was killed for good."""
        self._slots.pop(slot.index, None)
        if getattr(error, "actor_init_failed", False):
            self.fatal = f"slot {slot.index} could not start: {error}"
            log.error("%s; stopping every slot", self.fatal)
        elif slot.leaving_since is None:
            log.warning("slot %d is gone for good (killed with no restart)", slot.index)

    def _request(self, ray: Any, slots: int) -> None:
        """Tell the autoscaler what `slots` slots need (persistent until the next call)."""
        if self.requested and self.requested[-1] == slots:
            return
        assert self._shape is not None
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=self._shape.bundles(slots))
        except Exception as error:  # a hint only: a fixed cluster has no autoscaler to tell
            log.debug("request_resources(%d slots) failed: %s", slots, error)
        self.requested.append(slots)

    def _scale(self, ray: Any, target: int, depth: QueueDepth) -> None:
        staying = [slot for slot in self._slots.values() if slot.leaving_since is None]
        if len(staying) < target:
            for _ in range(target - len(staying)):
                self._start_slot()
        elif len(staying) > target:
            idle = sorted((s for s in staying if s.idle), key=lambda s: s.index, reverse=True)
            for slot in idle[: len(staying) - target]:
                log.info("slot %d released (the queue has %d runnable)", slot.index, depth.runnable)
                self._leave(slot)

    def _start_slot(self) -> None:
        index = next(i for i in range(len(self._slots) + 1) if i not in self._slots)
        threads = None
        if self._shape is not None and not self._shape.gpus:
            threads = max(1, int(self._shape.cpus))
        handle = self._remote.remote(self._slot_settings(), index, self.options.studies, threads)
        self._slots[index] = _Slot(index=index, handle=handle)
        log.info("slot %d requested", index)

    def _slot_settings(self) -> dict[str, Any]:
        """The driver's settings for every slot (a node's own ACTSEARCH_* are not read)."""
        values = self.settings.model_dump(mode="json")
        values["database_url"] = self.settings.resolved_database_url
        return values

    def _leave(self, slot: _Slot) -> None:
        slot.leaving_since = time.monotonic()
        if slot.seen:
            self._send_stop(slot)

    @staticmethod
    def _send_stop(slot: _Slot) -> None:
        """Ask a slot to finish its epoch and stop, once. A slot released before it first
        answered a status call gets it when it does: it may have started training meanwhile,
        and without it the drain waited its full DRAIN_S and then aborted the epoch."""
        if not slot.stop_sent:
            slot.stop_sent = True
            slot.handle.stop.remote()

    def _finish_leaving(self, ray: Any, limit_s: float = RELEASE_S) -> None:
        """Kill released slots once their loop has ended (or they overstayed `limit_s`)."""
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if slot.leaving_since is None:
                continue
            stopped = slot.status.get("state") in ("stopped", "fatal", "crashed")
            if not slot.seen or stopped or now - slot.leaving_since >= limit_s:
                if slot.seen and not stopped:
                    log.warning("slot %d did not stop in %.0f s; killing it", slot.index, limit_s)
                ray.kill(slot.handle, no_restart=True)
                self._slots.pop(slot.index, None)

    # -- stopping ---------------------------------------------------------------------------
    def _drain(self, ray: Any) -> None:
        """Stop every slot: epoch, then now (second signal or DRAIN_S), then kill (ABORT_S)."""
        if not self._slots:
            return
        log.info(
            "stopping %d slot(s): each finishes its epoch and hands its run back", len(self._slots)
        )
        for slot in self._slots.values():
            if slot.leaving_since is None:
                self._leave(slot)
        started = time.monotonic()
        while self._slots:
            self._poll(ray)
            waited = time.monotonic() - started
            if self._signals >= 2 or waited >= DRAIN_S:
                self._abort_all()
            if self._signals >= 3 or waited >= DRAIN_S + ABORT_S:
                self._finish_leaving(ray, limit_s=0)
                break
            self._finish_leaving(ray, limit_s=float("inf"))
            time.sleep(0.5)
        log.info("every slot stopped")

    def _abort_all(self) -> None:
        for slot in self._slots.values():
            if not slot.aborted:
                slot.aborted = True
                slot.handle.abort.remote()

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # embedded: the owner calls request_stop()
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self._signals:
            log.info("%s: slots finish their epoch and hand back (again: at once)", name)
        elif self._signals == 1:
            log.info("%s: slots hand back now (again: kill them)", name)
        self.request_stop()


def _describe_resources(resources: dict[str, float]) -> str:
    return (
        ", ".join(f"{resources[key]:g} {key}" for key in ("CPU", "GPU") if resources.get(key))
        or "no CPU or GPU yet"
    )
