"""Live progress inside an epoch (issue 18): step of steps, rate and ETA on the study, trial and
workers pages, moving between epochs; a stopped worker's times stand still.

The worker's heartbeats go through the store call the real worker makes
(`store.workers.heartbeat(worker_id, run_id, progress)`), with advancing progress, while the
trial's epoch never ends: without live progress the pages would show nothing moving, as in the
issue's 12-minute first epoch.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from conftest import SCREENSHOTS, Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker, Started
from playwright.sync_api import expect
from test_dash_studies import spec_text

pytestmark = pytest.mark.browser

POLL_TIMEOUT_MS = 15_000  # the slowest page polls every 5 s


def eta_text(progress: dict[str, Any]) -> str:
    """The ETA as the pages write it (common.js duration, minutes and seconds here)."""
    seconds = float(progress["eta_s"])
    assert 60 <= seconds < 3600
    return f"{int(seconds // 60)} m {round(seconds % 60)} s"


def running_trial(server: Server, name: str, worker_id: str) -> tuple[int, FakeWorker, Started]:
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text(name, 4))
    worker = FakeWorker(store, worker_id)
    run = worker.start(study.id)
    assert run is not None
    return study.id, worker, run


def test_step_rate_and_eta_advance_on_the_study_trial_and_workers_pages(
    page: Any, server: Server
) -> None:
    """Acceptance 1: one long epoch; each page follows its step count and ETA without a reload."""
    study_id, worker, run = running_trial(server, "live-epoch", "w-live-epoch")
    sign_in(page, server)

    # The trial page: preparing the data first (timed apart), then a progress line in the epoch.
    worker.beat(run, epoch=0, step=0, phase="data")
    page.goto(f"{server.url}/studies/{study_id}/trials/{run.trial.number}")
    line = page.locator("#trial-progress")
    expect(line).to_be_visible()
    expect(line).to_contain_text("preparing data")
    first = worker.beat(run, epoch=0, step=100, img_per_s=1250.0)
    expect(line).to_contain_text("epoch 1/10 · step 100/782", timeout=POLL_TIMEOUT_MS)
    expect(line).to_contain_text("1,250 img/s")
    expect(line).to_contain_text(f"ETA {eta_text(first)}")
    later = worker.beat(run, epoch=0, step=300, img_per_s=1310.0)
    assert later["eta_s"] < first["eta_s"]
    expect(line).to_contain_text("step 300/782", timeout=POLL_TIMEOUT_MS)
    expect(line).to_contain_text(f"ETA {eta_text(later)}")
    expect(line).to_contain_text("1,310 img/s")
    width = line.locator(".live-bar span").evaluate("span => parseFloat(span.style.width)")
    assert width == pytest.approx(100 * 300 / 7820, abs=0.01)  # of the whole trial: 10 epochs
    page.screenshot(path=str(SCREENSHOTS / "live-trial.png"))

    # The study page: the running row says where it is, how fast and how long to go.
    page.goto(f"{server.url}/studies/{study_id}")
    row = page.locator(f'#trials-table tbody tr[data-number="{run.trial.number}"]')
    expect(row.locator(".live-step")).to_have_text("epoch 1/10 · step 300/782")
    expect(row.locator(".live-eta")).to_have_text(f"ETA {eta_text(later)}")
    expect(row.locator(".live-rate")).to_have_text("1,310")
    third = worker.beat(run, epoch=0, step=500, img_per_s=1290.0)
    expect(row.locator(".live-step")).to_have_text(
        "epoch 1/10 · step 500/782", timeout=POLL_TIMEOUT_MS
    )
    expect(row.locator(".live-eta")).to_have_text(f"ETA {eta_text(third)}")
    expect(row.locator(".live-rate")).to_have_text("1,290")

    # The workers page: the worker's step, its current trial's rate and ETA.
    page.goto(f"{server.url}/workers")
    wrow = page.locator('#workers-table tbody tr[data-id="w-live-epoch"]')
    expect(wrow.locator(".live-step")).to_have_text("500/782")
    expect(wrow.locator(".live-eta")).to_have_text(eta_text(third))
    expect(wrow.locator(".live-rate")).to_have_text("1,290")
    fourth = worker.beat(run, epoch=0, step=700, img_per_s=1270.0)
    expect(wrow.locator(".live-step")).to_have_text("700/782", timeout=POLL_TIMEOUT_MS)
    expect(wrow.locator(".live-eta")).to_have_text(eta_text(fourth))
    expect(wrow.locator(".live-rate")).to_have_text("1,270")
    expect(wrow.locator("td").nth(5)).to_have_text("1/10")  # the epoch it trains, of 10
    page.screenshot(path=str(SCREENSHOTS / "live-workers.png"))
    assert_clean(page)


def test_a_finished_trial_shows_no_progress(page: Any, server: Server) -> None:
    """Progress is a running trial's: once it ends, the line and the ETA go."""
    study_id, worker, run = running_trial(server, "live-ends", "w-live-ends")
    worker.beat(run, epoch=1, step=40, steps=50, epochs=2)
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study_id}/trials/{run.trial.number}")
    expect(page.locator("#trial-progress")).to_contain_text("epoch 2/2 · step 40/50")
    worker.complete(run, [0.5, 0.6])
    expect(page.locator("#trial-state")).to_have_text("complete", timeout=POLL_TIMEOUT_MS)
    expect(page.locator("#trial-progress")).to_be_hidden()
    page.goto(f"{server.url}/studies/{study_id}")
    row = page.locator(f'#trials-table tbody tr[data-number="{run.trial.number}"]')
    expect(row.locator(".badge")).to_have_text("complete")
    expect(row.locator(".live-step, .live-eta")).to_have_count(0)
    # Its time is wall time, data preparation included: the column says so (the trial page
    # shows the preparation apart).
    expect(row.locator("td").nth(6)).to_have_attribute("title", re.compile("data preparation"))
    expect(page.locator('#trials-table th[data-sort="duration_s"]')).to_have_attribute(
        "title", re.compile("data preparation included")
    )
    assert_clean(page)


def test_a_stopped_workers_up_time_stops_at_its_last_heartbeat(page: Any, server: Server) -> None:
    """A stopped worker's "Up" and heartbeat do not go on counting; it says when it stopped."""
    store = server.store
    FakeWorker(store, "w-stopped-node")
    time.sleep(1.0)
    store.workers.heartbeat("w-stopped-node")  # its last heartbeat, a second after its start
    store.workers.stopped("w-stopped-node")
    time.sleep(3.0)  # stopped 3 s ago: a counting "Up" would read 4 s or more

    sign_in(page, server)
    page.goto(f"{server.url}/workers")
    row = page.locator('#workers-table tbody tr[data-id="w-stopped-node"]')
    expect(row.locator(".badge").first).to_have_text("stopped")
    cells = row.locator("td")
    expect(cells.nth(7)).to_contain_text(re.compile(r"^stopped (\d{2}:){2}\d{2}$"))
    expect(cells.nth(7)).not_to_contain_text("ago")
    up = cells.nth(11).inner_text()
    match = re.match(r"^(\d+\.\d) s", up)
    assert match, up
    assert 0.9 <= float(match.group(1)) < 2.5, up  # start to last heartbeat, not to now
    assert_clean(page)
