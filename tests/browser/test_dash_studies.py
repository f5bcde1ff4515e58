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


def test_spec_editor_opens_at_its_first_line_beside_a_labelled_pane(
    page: Any, server: Server
) -> None:
    """The editor opens scrolled to line 1 (not past it, to the caret at the end), and the pane
    beside it says what it is for before any submit."""
    sign_in(page, server)
    page.click("#new-study")
    text = page.locator("#spec-text")
    expect(text).to_be_focused()
    assert text.evaluate("t => t.scrollHeight > t.clientHeight")  # the example is longer
    assert text.evaluate("t => [t.scrollTop, t.selectionStart]") == [0, 0]
    assert page.locator("#spec-editor .gutter").evaluate("g => g.scrollTop") == 0
    pane = page.locator("#spec-editor .notes")
    expect(pane).to_have_attribute("aria-label", re.compile("problems found on submit"))
    expect(pane.locator(".placeholder")).to_be_visible()
    expect(pane.locator(".placeholder")).to_contain_text("errors in red, warnings in amber")
    page.screenshot(path=str(SCREENSHOTS / "spec-editor-open.png"))
    assert_clean(page)


def test_submit_shows_the_specs_warnings(page: Any, server: Server) -> None:
    """A spec that runs but not as written (warm-up as long as the training) is queued, and the
    submit flow shows why beside the field, listed, with a link to the new study."""
    sign_in(page, server)
    page.click("#new-study")
    spec = spec_text("warned-study", 2).replace(
        "  epochs: 2\n", "  epochs: 2\n  warmup_epochs: 3\n"
    )
    page.fill("#spec-text", spec)
    page.click("#spec-submit")
    warnings = page.locator("#spec-warnings")
    expect(warnings).to_be_visible()
    expect(warnings).to_contain_text("training.warmup_epochs")
    expect(warnings).to_contain_text("never reaches its peak")
    note = page.locator('#spec-editor .notes .note.warning[data-loc="training.warmup_epochs"]')
    expect(note).to_be_visible()
    assert int(note.get_attribute("data-line")) == spec.splitlines().index("  warmup_epochs: 3")
    expect(page.locator("#submit-panel")).to_be_visible()  # kept open to read them
    link = page.locator("#spec-status a")
    expect(link).to_contain_text("study #")
    row = page.locator("#studies-table tbody tr", has_text="warned-study")
    expect(row.locator(".badge")).to_have_text("queued")  # queued all the same
    page.screenshot(path=str(SCREENSHOTS / "spec-warnings.png"))
    link.click()
    page.wait_for_url(re.compile(r"/studies/\d+$"))
    expect(page.locator("#study-name")).to_have_text("warned-study")
    assert_clean(page)
