"""The study page: headline against the baseline, leaderboard, charts, the trial table, exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import SCREENSHOTS, Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker, curve_of
from playwright.sync_api import expect
from test_dash_studies import spec_text

from service.store import Store
from service.store.queries import leaderboard

pytestmark = pytest.mark.browser

CHARTS = ("chart-families", "chart-history", "chart-curves", "chart-importance", "chart-params")


def run_study(store: Store, name: str, budget: int, complete: int, pruned: int, failed: int) -> int:
    """A study whose trials were played by a worker; one more is left running at epoch 2."""
    admin = store.users.get_by_name("admin")
    study, _ = store.studies.create(admin, spec_text(name, budget))
    worker = FakeWorker(store, f"w-{name}")
    for i in range(complete + pruned + failed):
        run = worker.start(study.id)
        assert run is not None
        if i < complete:
            worker.complete(run, curve_of(run.family, run.params, 3))
        elif i < complete + pruned:
            worker.prune(run, curve_of(run.family, run.params, 3)[:1])
        else:
            worker.fail(run, "diverged", "loss became NaN at step 17", "step 17: loss nan\n")
    running = worker.start(study.id)
    assert running is not None
    for epoch, acc in enumerate(curve_of(running.family, running.params, 3)[:2]):
        worker.epoch(running, epoch, acc)
    return study.id


def chart_series(page: Any, element_id: str) -> int:
    """How many series the ECharts instance in #element_id draws (0 when it shows a note)."""
    return int(page.evaluate(
        """id => { const c = window.echarts && echarts.getInstanceByDom(document.getElementById(id));
                   return c ? c.getOption().series.length : 0; }""",
        element_id,
    ))  # fmt: skip


def values_in_table(page: Any) -> list[float]:
    """Val acc column of the table, in %."""
    cells = page.locator("#trials-table tbody tr td:nth-child(4)").all_inner_texts()
    return [float(c.split("%")[0]) for c in cells if "%" in c]


def test_study_page_compares_families_and_pages_filters_sorts_trials(
    page: Any, server: Server
) -> None:
    """Headline, leaderboard, charts and a server-paged table that filters and sorts."""
    store = server.store
    study_id = run_study(store, "family-comparison", 40, complete=30, pruned=3, failed=1)
    trials_requests: list[str] = []
    page.on("request", lambda r: trials_requests.append(r.url) if "/trials?" in r.url else None)
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study_id}")

    rows = page.locator("#trials-table tbody tr")
    expect(page.locator("#trials-total")).to_have_text("35 trials")
    expect(rows).to_have_count(35)
    assert all("limit=50" in url for url in trials_requests)  # one page, never everything

    # Headline: the best trial against the best baseline (relu) trial, with the difference.
    best = max(v for v in values_in_table(page))
    expect(page.locator("#best-value")).to_contain_text(f"{best:.2f}%")
    expect(page.locator("#base-sub")).to_contain_text("relu")
    expect(page.locator("#delta-value")).to_contain_text("pp")
    expect(page.locator("#count-value")).to_have_text("34 / 40")
    # Every relu trial trained the same configuration and seed: one training, no interval (and
    # no "± 0.00" spread of identical repeats, nor a "null" where an interval is missing).
    expect(page.locator("#base-sub")).to_contain_text("(n=1)")
    expect(page.locator("#headline")).not_to_contain_text("null")
    expect(page.locator("#headline")).not_to_contain_text("±")

    # Leaderboard: one row per family, the baseline marked.
    board = page.locator("#leaderboard tbody tr")
    family_column = page.locator("#trials-table tbody tr td:nth-child(2)").all_inner_texts()
    expect(board).to_have_count(len(set(family_column)))
    expect(page.locator('#leaderboard tr[data-family="relu"] .badge')).to_have_text("baseline")
    # In the API leaderboard's order (one ranking, by best), and the page says so.
    expect(page.locator("#baseline-note")).to_have_text("ranked by best · Δ against relu")
    api_order = [r.family for r in leaderboard(store.db, study_id).rows]
    assert board.evaluate_all("rows => rows.map(r => r.dataset.family)") == api_order

    # Charts are drawn (importance may say "not enough trials" for small families).
    for chart in CHARTS:
        page.wait_for_function(
            "id => !!document.querySelector(`#${id} canvas, #${id} .chart-note`)", arg=chart
        )
    for chart in ("chart-families", "chart-history", "chart-curves", "chart-params"):
        assert chart_series(page, chart) >= 1, chart
    pruned_curves = page.evaluate(
        """() => echarts.getInstanceByDom(document.getElementById('chart-curves')).getOption()
                 .series.filter(s => s.lineStyle.type === 'dashed').length"""
    )
    assert pruned_curves == 3  # pruned trials drawn as such

    # Filter by family and by state: the server answers with matching rows only.
    page.select_option("#f-family", "smu")
    expect(page.locator("#trials-total")).to_contain_text("matching")
    expect(rows.locator("td:nth-child(2)")).to_have_text(["smu"] * family_column.count("smu"))
    page.select_option("#f-family", "")
    page.select_option("#f-state", "pruned")
    expect(rows).to_have_count(3)
    expect(page.locator("#trials-total")).to_have_text("3 matching")
    page.click("#f-clear")
    expect(rows).to_have_count(35)
    values = values_in_table(page)
    runner_up = max(v for v in values if v < best)
    page.fill("#f-min", f"{(best + runner_up) / 2:.3f}")  # in %: between the two best values
    page.click("#f-apply")
    expect(rows).to_have_count(values.count(best))
    page.click("#f-clear")
    expect(rows).to_have_count(35)

    # Sort by validation accuracy (descending first), then page through 10 at a time.
    page.locator('#trials-table th[data-sort="value"]').click()
    expect(page.locator('#trials-table th[data-sort="value"]')).to_have_class(
        re.compile("sorted-desc")
    )
    expect(rows.first.locator("td:nth-child(4)")).to_contain_text(f"{best:.2f}%")
    page.select_option("#page-size", "25")
    expect(rows).to_have_count(25)
    page.click("#page-next")
    expect(page.locator("#page-info")).to_have_text("26–35 of 35")
    expect(rows).to_have_count(10)
    assert any("offset=25" in url and "limit=25" in url for url in trials_requests)
    page.screenshot(path=str(SCREENSHOTS / "study-page-filtered.png"), full_page=True)
    assert_clean(page)


def test_study_page_follows_a_running_study_and_exports(
    page: Any, server: Server, tmp_path: Any
) -> None:
    """New trials and a finishing trial show up without a reload; CSV and LaTeX download."""
    store = server.store
    study_id = run_study(store, "live-study", 12, complete=6, pruned=0, failed=0)
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study_id}")
    rows = page.locator("#trials-table tbody tr")
    expect(rows).to_have_count(7)
    expect(page.locator('#trials-table tbody tr[data-state="running"]')).to_have_count(1)

    worker = FakeWorker(store, "w-live-2")
    for _ in range(2):
        run = worker.start(study_id)
        assert run is not None
        worker.complete(run, curve_of(run.family, run.params, 3))
    expect(rows).to_have_count(9, timeout=15_000)
    expect(page.locator("#count-value")).to_have_text("8 / 12", timeout=15_000)

    with page.expect_download() as download:
        page.click("#export-csv")
    csv_bytes = Path(download.value.path()).read_bytes()
    api = f"{server.url}/api/v1/studies/{study_id}/leaderboard"
    assert csv_bytes == page.request.get(f"{api}?format=csv").body()  # the API's file
    assert csv_bytes.decode().startswith("family,n,mean,std,best,best_number")
    families = [r.family for r in leaderboard(store.db, study_id).rows if r.n]
    assert len(csv_bytes.decode().splitlines()) == 1 + len(families)
    with page.expect_download() as download:
        page.click("#export-tex")
    tex = Path(download.value.path()).read_bytes()
    assert tex == page.request.get(f"{api}?format=latex").body()
    assert tex.decode().startswith("\\begin{tabular}") and "$\\Delta$ vs relu" in tex.decode()
    assert_clean(page)


def test_a_note_is_grey_and_a_failure_red(page: Any, server: Server) -> None:
    """A running study's note (e.g. a machine without its data) is not styled as a failure."""
    store = server.store
    noted = run_study(store, "noted-study", 4, complete=1, pruned=0, failed=0)
    store.studies.cannot_run_on(noted, "host-a", "no CIFAR at /data", grace_s=3600)
    failed = run_study(store, "failed-study", 4, complete=1, pruned=0, failed=0)
    store.studies.fail(failed, "its data could not be loaded")
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{noted}")
    note = page.locator("#study-note")
    expect(note).to_have_class("note-box")
    expect(note).to_contain_text("host-a cannot run this study (no CIFAR at /data)")
    page.goto(f"{server.url}/studies/{failed}")
    expect(page.locator("#study-note")).to_have_class("error-box")
    expect(page.locator("#study-note")).to_contain_text("its data could not be loaded")
    assert_clean(page)
