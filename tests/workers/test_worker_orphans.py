"""A slot dies with its supervisor: `kill -9` of the supervisor leaves no orphan training on.

The slot hands its running trial back at once (it does not finish a long epoch first), so the
retry is queued for another worker right away instead of after the grace period.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from worker_helpers import (
    log_text,
    make_image_folder,
    make_user,
    open_store,
    runs_of,
    tiny_spec,
    wait_for,
    worker_env,
    worker_processes,
    workers_of,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc"),
]

GONE_BOUND_S = 20.0  # well under one epoch of the study below


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_slot_whose_supervisor_is_killed_hands_its_trial_back_at_once(tmp_path: Path) -> None:
    # lenet at width 8 on 1,000 images: an epoch lasts several seconds even on a fast machine.
    folder = make_image_folder(tmp_path / "folder", train_per_class=100)
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    store = open_store(url)
    spec = tiny_spec(folder, n_trials=1, epochs=50, width=8.0)
    study, _ = store.studies.create(make_user(store), spec)
    log = tmp_path / "worker.log"
    slot = 0
    try:
        with worker_processes(["--gpus", "cpu"], worker_env(url, tmp_path), log) as supervisor:
            seen = wait_for(
                lambda: next((r.epochs_done for r in runs_of(store, study.id) if r.epochs_done), 0),
                300,
                "a first epoch",
                interval=0.05,
            )
            (worker,) = workers_of(store)
            slot = worker.pid
            supervisor.kill()  # no chance to tell its slot anything
            supervisor.wait()
            killed_at = time.monotonic()
            wait_for(lambda: not _alive(slot), GONE_BOUND_S, "the orphaned slot to exit")
            gone_s = time.monotonic() - killed_at
        text = log_text(log)
        lost, retry = runs_of(store, study.id)
        assert lost.state == "failed" and lost.failure_reason == "worker_lost", text[-3000:]
        assert lost.epochs_done == seen, (seen, lost.epochs_done, gone_s)  # no epoch finished
        assert retry.state == "queued" and retry.params == lost.params
        assert "handing the running trial back now" in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
    finally:
        if slot and _alive(slot):
            os.kill(slot, signal.SIGKILL)
        store.dispose()
