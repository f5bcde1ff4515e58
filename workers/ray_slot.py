"""One worker slot inside a Ray actor: the SlotWorker loop in a thread of the actor's process.

The driver (workers.ray_driver) wraps SlotActor with `ray.remote(...)` at run time, so this
module imports without Ray. The loop starts in the constructor: when Ray restarts the actor
(its process died, its node came back, `ray.kill(..., no_restart=False)`), the constructor runs
again and the slot is back, registered under a new worker id. What the dead process was training
is found by the heartbeat path like any lost worker's run: failed as `worker_lost` after
`grace_s` and retried with the same parameters.

The device is the one Ray assigned: Ray sets CUDA_VISIBLE_DEVICES for an actor that asked for
`num_gpus` before its constructor runs, so torch sees that GPU as cuda:0 (a slot with 1/N of a
GPU shares it with N-1 others, as with `--per-gpu N`). Calls from the driver (status, stop,
abort) run on Ray's other actor threads while the loop trains.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from service.settings import Settings
from workers.options import SlotOptions
from workers.worker import FatalWorkerError, SlotWorker

log = logging.getLogger(__name__)

CRASH_RESTART_S = 5.0  # a slot whose loop crashed exits after this, and Ray restarts the actor
ACTOR_THREADS = 4  # the loop's thread aside, Ray's threads answering the driver's calls


class SlotActor:
    """A slot's loop, run by a Ray actor; the driver asks status(), stop() and abort()."""

    def __init__(
        self,
        settings: dict[str, Any],
        slot: int,
        studies: tuple[int, ...] | None = None,
        threads: int | None = None,
    ) -> None:
        import ray

        self.settings = Settings(**settings)
        _configure_logging(self.settings.log_level, slot)
        gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
        self.node_id = ray.get_runtime_context().get_node_id()
        self.options = SlotOptions(
            slot=slot,
            device="cuda" if gpu_ids else "cpu",
            gpu_label=",".join(gpu_ids),
            studies=studies,
            threads=threads,
        )
        self.worker = SlotWorker(self.settings, self.options)
        self.state = "running"  # running | stopped | fatal | crashed
        self.error: str | None = None
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, name=f"slot-{slot}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            _check_gpu(self.options)
            self.worker.run()
            self.state = "stopped"
        except FatalWorkerError as error:
            log.error("%s", error)
            self.error, self.state = str(error), "fatal"  # the driver stops every slot
        except BaseException as error:
            log.exception("slot %s crashed", self.options.slot)
            self.error, self.state = f"{type(error).__name__}: {error}", "crashed"
            # A fresh process, as the supervisor would start: Ray restarts the actor.
            time.sleep(CRASH_RESTART_S)
            os._exit(1)

    def status(self) -> dict[str, Any]:
        """What the driver needs to scale and to drain: state, busy, who and where."""
        return {
            "state": self.state,
            "busy": self.worker.current_run is not None,
            "run_id": self.worker.current_run,
            "worker_id": self.worker.worker_id,
            "trials": self.worker.trials,
            "error": self.error,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node_id": self.node_id,
            "device": self.options.device,
            "gpu": self.options.gpu_label,
            "started_at": self.started_at,
        }

    def stop(self) -> None:
        """Finish the current epoch, hand the run back, mark the worker stopped (SIGTERM's way)."""
        self.worker.request_stop()

    def abort(self) -> None:
        """Hand the running trial back now, within a training step (a second SIGTERM's way)."""
        self.worker.stopping.set()
        self.worker.aborting.set()

    def join(self, timeout: float) -> dict[str, Any]:
        """Wait up to `timeout` seconds for the loop to end; then the status."""
        self._thread.join(timeout)
        return self.status()


def _check_gpu(options: SlotOptions) -> None:
    """A GPU Ray assigned must be one torch can use; else every restart would fail alike."""
    if options.gpu_unusable:
        raise FatalWorkerError(
            f"slot {options.slot}: Ray assigned GPU {options.gpu_label} on "
            f"{socket.gethostname()}, but torch sees no CUDA device there "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): the node "
            "declares GPUs it cannot use (`ray start --num-gpus`), or its NVIDIA driver or "
            "torch's CUDA build is missing; fix the node, or run CPU slots with --gpus cpu"
        )


def _configure_logging(level: str, slot: int) -> None:
    # Ray sends the actor's stderr to the driver's terminal, prefixed with the actor's pid.
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s slot {slot} %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("optuna", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
