"""The studies page: submit a spec (errors beside their fields), watch trials arrive, act on it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SCREENSHOTS, Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker, curve_of
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

QUICKSTART = (ROOT / "examples" / "quickstart.yaml").read_text()


def spec_text(name: str, n_trials: int) -> str:
    """The README's quick-start spec under another name and budget."""
    text = re.sub(r"(?m)^name: .*$", f"name: {name}", QUICKSTART)
    return re.sub(r"(?m)^n_trials: .*$", f"n_trials: {n_trials}", text)


def line_of(text: str, key: str) -> int:
    """0-based line of a top-level key."""
    return next(i for i, line in enumerate(text.splitlines()) if line.startswith(f"{key}:"))


def test_submit_shows_errors_beside_fields_then_queues_and_runs(
    page: Any, server: Server, tmp_path: Path
) -> None:
    """A bad spec is refused with the error beside its line; a good one appears and runs live."""
    sign_in(page, server)
    page.click("#new-study")
    bad = spec_text("ui-submitted", 0)
    page.fill("#spec-text", bad)
    page.watch.allow(422, "/api/v1/studies")
    page.click("#spec-submit")
    note = page.locator('#spec-editor .notes .note[data-loc="n_trials"]')
    expect(note).to_be_visible()
    # Beside the n_trials line: the note's row is that line's row in the editor.
    assert int(note.get_attribute("data-line")) == line_of(bad, "n_trials")
    expect(page.locator("#spec-editor .gutter .bad")).to_have_text(
        str(line_of(bad, "n_trials") + 1)
    )
    expect(page.locator("#spec-status")).to_contain_text("not submitted")
    page.screenshot(path=str(SCREENSHOTS / "spec-errors.png"))

    page.fill("#spec-text", spec_text("ui-submitted", 4))
    page.click("#spec-submit")
    row = page.locator("#studies-table tbody tr", has_text="ui-submitted")
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("queued")
    study_id = int(row.get_attribute("data-id"))
    expect(page.locator("#submit-panel")).to_be_hidden()

    # A worker starts and finishes trials: the list follows without a reload.
    worker = FakeWorker(server.store, "w-list-test")
    first = worker.start(study_id)
    assert first is not None
    expect(row.locator(".badge")).to_have_text("running", timeout=15_000)
    worker.complete(first, curve_of(first.family, first.params, 2))
    expect(row.locator(".progress-cell .count")).to_contain_text("1 / 4", timeout=15_000)
    expect(row.locator("td").nth(5)).to_contain_text("%")  # best value
    expect(row.locator("td").nth(6)).to_have_text(first.family)  # family of the best trial

    # Owner actions: pause, then resume, then cancel (confirmed).
    row.locator('button[data-action="pause"]').click()
    expect(row.locator(".badge")).to_have_text("paused")
    row.locator('button[data-action="resume"]').click()
    expect(row.locator(".badge")).to_have_text("running")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('button[data-action="cancel"]').click()
    expect(row.locator(".badge")).to_have_text("cancelled")
    expect(row.locator("button")).to_have_count(0)
    assert_clean(page)


def test_filter_and_sort_the_list(page: Any, server: Server) -> None:
    """Filtering by text and status narrows the list; other users see no action buttons."""
    admin = server.store.users.get_by_name("admin")
    for name in ("alpha-sweep", "beta-sweep"):
        server.store.studies.create(admin, spec_text(name, 2))
    sign_in(page, server)
    rows = page.locator("#studies-table tbody tr")
    expect(rows.filter(has_text="alpha-sweep")).to_have_count(1)
    page.fill("#study-filter", "alpha")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("alpha-sweep")
    page.fill("#study-filter", "")
    page.select_option("#status-filter", "cancelled")
    expect(rows.filter(has_text="alpha-sweep")).to_have_count(0)
    page.select_option("#status-filter", "queued")
    expect(rows.filter(has_text="beta-sweep")).to_have_count(1)
    page.fill("#study-filter", "sweep")
    page.select_option("#study-sort", "name")
    expect(rows.locator("td:nth-child(2)")).to_have_text(["alpha-sweep", "beta-sweep"])
    page.select_option("#study-sort", "-id")
    expect(rows.locator("td:nth-child(2)")).to_have_text(["beta-sweep", "alpha-sweep"])
    assert_clean(page)

    # A non-admin who owns none of them sees them all but may act on none.
    _, token = server.store.users.create("reader")
    sign_in(page, server, token)
    expect(rows.filter(has_text="beta-sweep")).to_have_count(1)
    expect(page.locator("#studies-table button[data-action]")).to_have_count(0)
    assert_clean(page)
