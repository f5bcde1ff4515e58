"""Live progress inside an epoch, and cancel / pause acting within a few steps (issue 18).

The real worker loop (SlotWorker with its heartbeat thread) and the real trainer, on a model
whose activations sleep in their forward pass once the first epoch is over: the second epoch
would take over a minute, longer than many heartbeats, exactly where the old worker looked hung
(no progress until the epoch ended) and ignored a cancel until then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select
from torch import nn
from worker_helpers import make_image_folder, make_user, open_store, runs_of, tiny_spec, wait_for

from service.db import Epoch, Run, Worker
from service.settings import Settings
from service.store import Store
from service.store.queries.trials import list_trials
from service.store.queries.workers import list_workers
from workers.options import SlotOptions
from workers.torch_training import TorchTraining
from workers.worker import SlotWorker

pytestmark = [pytest.mark.slow]

SLEEP_S = 0.7  # per activation forward, once slow: lenet has 4 sites, so ~2.8 s per step
HEARTBEAT_S = 0.5


class _Switch:
    """Slow from the moment `on` is set (after the first epoch)."""

    def __init__(self) -> None:
        self.on = threading.Event()


class _SlowReLU(nn.Module):
    def __init__(self, switch: _Switch) -> None:
        super().__init__()
        self.switch = switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.switch.on.is_set() and self.training:
            time.sleep(SLEEP_S)
        return torch.relu(x)


class _SlowTraining(TorchTraining):
    """The real TorchTraining, with activations that become slow after epoch 1."""

    def __init__(self, settings: Settings, switch: _Switch) -> None:
        super().__init__(
            settings, SlotOptions(threads=1), act_factory=lambda: lambda c: _SlowReLU(switch)
        )
        self.switch = switch

    def train(self, config, data, on_epoch, should_stop, on_step=None):  # type: ignore[no-untyped-def]
        def epoch_then_slow(report: Any) -> None:
            on_epoch(report)
            self.switch.on.set()

        return super().train(config, data, epoch_then_slow, should_stop, on_step)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("folder"), train_per_class=120)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield store
    store.dispose()


@pytest.fixture
def running(store: Store, folder: Path, tmp_path: Path) -> Iterator[tuple[int, SlotWorker]]:
    """A study of one 3-epoch trial, its worker training it in a thread."""
    spec = tiny_spec(folder, n_trials=1, epochs=3, activations={"relu": {}}, lr=0.01, width=1.0)
    study, _ = store.studies.create(make_user(store), spec)
    settings = Settings(
        database_url=store.db.url, home=tmp_path, heartbeat_s=HEARTBEAT_S, grace_s=60.0
    )
    switch = _Switch()
    worker = SlotWorker(
        settings,
        SlotOptions(max_trials=2),
        training=_SlowTraining(settings, switch),
        store=store,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield study.id, worker
    worker.request_stop()
    worker.aborting.set()
    thread.join(timeout=60)


def _run(store: Store, study_id: int) -> Run:
    return next(r for r in runs_of(store, study_id) if r.attempt == 1)


def _in_slow_epoch(store: Store, study_id: int) -> Run | None:
    runs = [r for r in runs_of(store, study_id) if r.state == "running"]
    if not runs or runs[0].epochs_done < 1:
        return None
    progress = runs[0].progress or {}
    return runs[0] if progress.get("epoch") == 1 and (progress.get("step") or 0) >= 1 else None


def test_steps_rate_and_eta_advance_within_a_long_epoch(
    store: Store, running: tuple[int, SlotWorker]
) -> None:
    study_id, _ = running
    run = wait_for(lambda: _in_slow_epoch(store, study_id), 120, "the slow second epoch")
    steps = run.progress["steps"]
    assert steps * 4 * SLEEP_S >= 60  # this epoch would take more than a minute
    first = run.progress["step"]
    later = wait_for(
        lambda: (p := _run(store, study_id).progress) and p["step"] > first and p, 30, "a step"
    )
    assert later["epoch"] == 1 and later["epochs"] == 3 and later["phase"] == "training"
    rate = wait_for(lambda: _run(store, study_id).progress.get("img_per_s"), 40, "a rate")
    assert 0 < rate < 200  # the slow epoch's own rate, not the fast first epoch's
    assert _run(store, study_id).progress["eta_s"] > 60  # most of two slow epochs to go
    with store.db.session() as session:
        worker = session.scalars(select(Worker)).one()
        assert worker.progress and worker.progress["epoch"] == 1
        assert worker.img_per_s == pytest.approx(worker.progress["img_per_s"])
    # What the API, the dashboard and `status --follow` read: the read model's rows.
    (listed,) = list_trials(store.db, study_id).items
    assert listed["progress"]["epoch"] == 1 and listed["progress"]["steps"] == steps
    (live,) = [w for w in list_workers(store.db, 60.0) if w["current_run_id"] == run.id]
    assert live["progress"]["epoch"] == 1 and live["img_per_s"] is not None


def test_a_cancel_stops_the_trial_within_seconds_and_keeps_its_finished_epoch(
    store: Store, running: tuple[int, SlotWorker]
) -> None:
    study_id, _ = running
    wait_for(lambda: _in_slow_epoch(store, study_id), 120, "the slow second epoch")
    cancelled = time.monotonic()
    store.studies.transition(study_id, "cancel")
    run = wait_for(
        lambda: (r := _run(store, study_id)).state != "running" and r, 30, "the run to stop"
    )
    assert time.monotonic() - cancelled < 10
    assert run.state == "cancelled" and run.epochs_done == 1
    with store.db.session() as session:
        epochs = list(session.scalars(select(Epoch.epoch).where(Epoch.run_id == run.id)))
    assert epochs == [0]  # the finished epoch is kept


def test_a_pause_hands_the_trial_back_within_seconds_for_a_retry_on_resume(
    store: Store, running: tuple[int, SlotWorker]
) -> None:
    study_id, _ = running
    wait_for(lambda: _in_slow_epoch(store, study_id), 120, "the slow second epoch")
    paused = time.monotonic()
    store.studies.transition(study_id, "pause")
    run = wait_for(
        lambda: (r := _run(store, study_id)).state != "running" and r, 30, "the run to stop"
    )
    assert time.monotonic() - paused < 10
    assert run.failure_message == "its study was paused" and run.epochs_done == 1
    (retry,) = [r for r in runs_of(store, study_id) if r.retry_of == run.id]
    assert retry.state == "queued" and retry.attempt == run.attempt + 1
    assert retry.params == run.params
