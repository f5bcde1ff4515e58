"""Every page works with nothing beyond localhost: no CDN, no fonts, no telemetry."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import LOCAL_URL, Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker, curve_of
from playwright.sync_api import expect
from test_dash_studies import spec_text

pytestmark = pytest.mark.browser


def test_every_page_loads_with_only_localhost_reachable(page: Any, server: Server) -> None:
    """Requests leaving 127.0.0.1 are blocked and recorded; every page still renders fully."""
    blocked: list[str] = []

    def only_local(route: Any) -> None:
        if LOCAL_URL.match(route.request.url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_local)
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("offline", 3))
    worker = FakeWorker(store, "w-offline")
    run = worker.start(study.id)
    assert run is not None
    worker.complete(run, curve_of(run.family, run.params, 2))
    while run.family == "relu":  # the trial page below draws learned curves: one that has them
        next_run = worker.start(study.id)
        assert next_run is not None
        run = next_run
        worker.complete(run, curve_of(run.family, run.params, 2))

    page.goto(f"{server.url}/login")
    expect(page.locator("#token")).to_be_visible()
    sign_in(page, server)
    expect(page.locator("#studies-table tbody tr", has_text="offline")).to_be_visible()
    page.goto(f"{server.url}/studies/{study.id}")
    page.wait_for_function("() => performance.getEntriesByName('actsearch:charts').length > 0")
    page.goto(f"{server.url}/studies/{study.id}/trials/{run.trial.number}")
    page.wait_for_function("() => !!document.querySelector('#chart-f canvas')")
    page.goto(f"{server.url}/workers")
    expect(page.locator('#workers-table tr[data-id="w-offline"]')).to_be_visible()

    assert not blocked, f"pages asked for outside resources: {blocked}"
    requested = page.watch.requests
    assert any(re.search(r"/vendor/echarts\.min\.js$", url) for url in requested)
    assert all(LOCAL_URL.match(url) for url in requested)
    assert_clean(page)
