"""The workers page: device, current trial and epoch, heartbeat age, throughput."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker
from playwright.sync_api import expect
from test_dash_studies import spec_text

pytestmark = pytest.mark.browser


def test_workers_page_shows_what_each_worker_does(page: Any, server: Server) -> None:
    """A busy worker links to its trial and shows its epoch and img/s."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("on-workers", 2))
    worker = FakeWorker(store, "w-busy-node")
    run = worker.start(study.id)
    assert run is not None
    worker.epoch(run, 0, 0.5)
    worker.epoch(run, 1, 0.6)

    sign_in(page, server)
    page.click("header nav >> text=Workers")
    page.wait_for_url(f"{server.url}/workers")
    row = page.locator('#workers-table tbody tr[data-id="w-busy-node"]')
    expect(row).to_contain_text("cuda:0 (NVIDIA H100 80GB HBM3)")
    expect(row.locator("td").nth(3)).to_contain_text("busy")
    expect(row.locator("td").nth(5)).to_have_text("2")  # second epoch (shown 1-based)
    expect(row.locator("td").nth(8)).to_have_text("40,100")
    link = row.locator("td").nth(4).locator("a")
    expect(link).to_have_text(f"study {study.id} · trial {run.trial.number}")
    expect(row.locator("td").nth(7)).to_contain_text("ago")
    link.click()
    page.wait_for_url(f"{server.url}/studies/{study.id}/trials/{run.trial.number}")
    assert_clean(page)
