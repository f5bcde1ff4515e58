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


# -- issue 18: the family chart, parallel coordinates, cancelled trials, retry and clone ----------
AXIS_LINES = """id => {
  // The chart's drawn straight lines: [x1, y1, x2, y2] of each (axes, ticks, grid, markLine).
  const chart = echarts.getInstanceByDom(document.getElementById(id));
  return chart.getZr().storage.getDisplayList()
    .filter((e) => e.shape && "x1" in e.shape && "y2" in e.shape)
    .map((e) => [e.shape.x1, e.shape.y1, e.shape.x2, e.shape.y2]);
}"""


def test_family_chart_draws_the_baseline_mean_exactly_and_its_axis_at_the_edge(
    page: Any, server: Server
) -> None:
    """The baseline's mean line sits at its value (not rounded to a whole percent) and says it;
    the y axis is drawn at the chart's left edge, not through the first family's box."""
    study_id = run_study(server.store, "exact-mean", 12, complete=8, pruned=0, failed=0)
    base = next(r for r in leaderboard(server.store.db, study_id).rows if r.is_baseline)
    mean = base.mean
    assert mean is not None and round(mean, 2) != mean  # 0.8132: rounding would move it
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study_id}")
    page.wait_for_function("() => !!document.querySelector('#chart-families canvas')")
    lines = page.evaluate(AXIS_LINES, "chart-families")
    at_mean = page.evaluate(
        """mean => echarts.getInstanceByDom(document.getElementById('chart-families'))
                   .convertToPixel({ yAxisIndex: 0 }, mean)""",
        mean,
    )
    label = page.evaluate(
        """() => echarts.getInstanceByDom(document.getElementById('chart-families')).getOption()
                 .series[0].markLine.label.formatter"""
    )
    assert label == f"relu mean {100 * mean:.2f}%"
    # The markLine is the only horizontal line not starting at the grid's left (60 px).
    horizontal = [line for line in lines if line[1] == line[3] and line[0] != line[2]]
    drawn = [y for x1, y, x2, _ in horizontal if abs(y - at_mean) < 3]
    assert drawn and min(abs(y - at_mean) for y in drawn) < 0.5, (at_mean, horizontal)

    first_category = page.evaluate(
        """() => echarts.getInstanceByDom(document.getElementById('chart-families'))
                 .convertToPixel({ xAxisIndex: 1 }, 0)"""
    )
    tall = [line for line in lines if line[0] == line[2] and abs(line[1] - line[3]) > 100]
    assert tall, lines  # the y axis line
    assert all(abs(x - first_category) > 5 for x, *_ in tall), (first_category, tall)
    assert all(x < 70 for x, *_ in tall), tall  # at the grid's left edge (60 px)
    assert_clean(page)


def test_parallel_coordinates_need_two_trials(page: Any, server: Server) -> None:
    """One complete trial of a family draws no parallel axes (their scales would be made up)."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("one-smu", 6))
    worker = FakeWorker(store, "w-one-smu")
    families: dict[str, int] = {}
    while "smu" not in families:
        run = worker.start(study.id)
        assert run is not None
        worker.complete(run, curve_of(run.family, run.params, 2))
        families[run.family] = families.get(run.family, 0) + 1
    assert families["smu"] == 1
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    page.wait_for_function("() => !!document.querySelector('#chart-families canvas')")
    page.select_option("#params-family", "smu")
    expect(page.locator("#chart-params .chart-note")).to_contain_text("need two or more")
    assert chart_series(page, "chart-params") == 0
    assert_clean(page)


def test_cancelled_trials_count_and_say_so_once(page: Any, server: Server) -> None:
    """A cancelled trial counts among the finished ones and its state cell says "cancelled" once."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("with-cancel", 6))
    worker = FakeWorker(store, "w-with-cancel")
    done = worker.start(study.id)
    assert done is not None
    worker.complete(done, curve_of(done.family, done.params, 2))
    stopped = worker.start(study.id)
    assert stopped is not None
    worker.cancel(stopped, curve_of(stopped.family, stopped.params, 2)[:1])
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    row = page.locator(f'#trials-table tbody tr[data-number="{stopped.trial.number}"]')
    expect(row.locator("td").nth(2)).to_have_text("cancelled")
    expect(row.locator("td").nth(5)).to_have_text("1")  # its finished epoch, kept
    expect(page.locator("#count-value")).to_have_text("2 / 6")
    expect(page.locator("#count-sub")).to_contain_text("1 cancelled")
    expect(page.locator("#study-progress .count")).to_contain_text("2 / 6")
    expect(page.locator("#study-progress .progress .cancelled")).to_have_count(1)
    page.goto(f"{server.url}/")
    listed = page.locator(f'#studies-table tbody tr[data-id="{study.id}"]')
    expect(listed.locator(".progress-cell .count")).to_contain_text("2 / 6")
    assert_clean(page)


def test_retry_a_failed_study_from_its_page(page: Any, server: Server) -> None:
    """A failed study: its searched parameters are named, and Retry makes a new study, linked."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("to-retry", 4))
    store.studies.fail(study.id, "its data could not be loaded")
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    note = page.locator("#chart-importance .chart-note")
    expect(note).to_contain_text("smu.alpha")
    expect(note).not_to_contain_text("No searched parameters")
    expect(page.locator("#chart-params .chart-note")).to_contain_text("No complete trials yet")
    retry = page.locator('#study-actions button[data-action="retry"]')
    expect(retry).to_be_visible()
    retry.click()
    link = page.locator("#retried-as a")
    expect(link).to_contain_text("to-retry (retry)")
    new_id = int(link.get_attribute("data-study-id"))
    assert new_id != study.id
    again, source = store.studies.get(new_id).spec, store.studies.get(study.id).spec
    assert again["activations"] == source["activations"] and again["name"] == "to-retry (retry)"
    link.click()
    page.wait_for_url(f"{server.url}/studies/{new_id}")
    expect(page.locator("#study-status")).to_have_text("queued")
    expect(page.locator('#study-actions button[data-action="retry"]')).to_have_count(0)
    assert_clean(page)

    # Only its owner or an admin may retry it.
    _, token = store.users.create("not-the-owner")
    sign_in(page, server, token)
    page.goto(f"{server.url}/studies/{study.id}")
    expect(page.locator("#clone-study")).to_be_visible()
    expect(page.locator('#study-actions button[data-action="retry"]')).to_have_count(0)
    assert_clean(page)


def test_clone_opens_the_spec_editor_with_the_study_spec(page: Any, server: Server) -> None:
    """Clone: the studies page's editor opens with the study's spec; changed, it is a new study."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("to-clone", 4))
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    page.click("#clone-study")
    page.wait_for_url(f"{server.url}/?clone={study.id}")
    expect(page.locator("#submit-panel")).to_be_visible()
    expect(page.locator("#submit-title")).to_contain_text(f"Clone study #{study.id}")
    text = page.locator("#spec-text").input_value()
    assert "name: to-clone\n" in text and "smu:" in text
    page.fill("#spec-text", text.replace("name: to-clone\n", "name: cloned-changed\n"))
    page.click("#spec-submit")
    row = page.locator("#studies-table tbody tr", has_text="cloned-changed")
    expect(row).to_be_visible()
    clone = store.studies.get(int(row.get_attribute("data-id")))
    assert {k: v for k, v in clone.spec.items() if k != "name"} == {
        k: v for k, v in study.spec.items() if k != "name"
    }
    assert_clean(page)


def test_the_first_page_of_trials_is_asked_for_once_when_the_early_request_comes_late(
    page: Any, server: Server
) -> None:
    """first_trials.js (async, in the head) asks for the table's first page while the modules load;
    when it runs after the table asked for the page itself, it asks nothing: one request."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("early-late", 2))
    worker = FakeWorker(store, "w-early-late")
    for _ in range(2):
        run = worker.start(study.id)
        assert run is not None
        worker.complete(run, curve_of(run.family, run.params, 2))
    assert store.studies.get(study.id).status == "completed"  # not live: no polls
    listing: list[str] = []
    page.on("request", lambda r: listing.append(r.url) if "/trials?" in r.url else None)
    held: list[Any] = []
    page.route("**/js/first_trials.js*", lambda route: held.append(route))  # answered later
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}", wait_until="domcontentloaded")
    expect(page.locator("#trials-table tbody tr")).to_have_count(2)
    assert len(held) == 1 and len(listing) == 1
    page.evaluate(
        """() => { const s = document.querySelector('script[src*="first_trials.js"]');
                   window.earlyRan = new Promise((ran) => s.addEventListener('load', ran)); }"""
    )
    held[0].continue_()
    page.evaluate("() => window.earlyRan")  # the late script has run
    page.wait_for_load_state("networkidle")
    assert len(listing) == 1, listing
    assert_clean(page)
