"""The trial page: learned activation curves against ReLU, epochs, record, failure and log."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SCREENSHOTS, Server, assert_clean, sign_in
from dashboard_helpers import SITES, FakeWorker, curve_of
from playwright.sync_api import expect
from test_dash_studies import spec_text

pytestmark = pytest.mark.browser


def series_names(page: Any, element_id: str) -> list[str]:
    """Names of the series the chart in #element_id draws."""
    return list(page.evaluate(
        "id => echarts.getInstanceByDom(document.getElementById(id)).getOption().series.map(s => s.name)",
        element_id,
    ))  # fmt: skip


def test_learned_activation_curves_from_the_trial_table(page: Any, server: Server) -> None:
    """From the study's table to a trial: f and f′ per site, initial vs trained, over ReLU."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("curves", 6))
    worker = FakeWorker(store, "w-curves")
    numbers = {}
    for _ in range(4):
        run = worker.start(study.id)
        assert run is not None
        worker.complete(run, curve_of(run.family, run.params, 4))
        numbers[run.family] = run.trial.number
    smu_number = numbers.get("smu", numbers[next(f for f in numbers if f != "relu")])

    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    page.locator(f'#trials-table tbody tr[data-number="{smu_number}"] td a').click()
    page.wait_for_url(f"{server.url}/studies/{study.id}/trials/{smu_number}")

    page.wait_for_function("() => !!document.querySelector('#chart-f canvas')")
    names = series_names(page, "chart-f")
    assert names[0] == "ReLU" and "initial" in names and "trained" in names
    assert series_names(page, "chart-df")[:1] == ["ReLU"]
    options = page.locator("#site-select option")
    expect(options).to_have_count(len(SITES) + 1)  # every site, plus all of them overlaid
    trained = page.evaluate(
        """() => echarts.getInstanceByDom(document.getElementById('chart-f')).getOption()
                 .series.find(s => s.name === 'trained').data.length"""
    )
    assert trained == 81  # the stored grid, point for point
    page.select_option("#site-select", "*")
    page.wait_for_function(
        "() => echarts.getInstanceByDom(document.getElementById('chart-f')).getOption().series.length === 4"
    )
    assert series_names(page, "chart-f") == ["ReLU", *SITES]

    expect(page.locator("#trial-state")).to_have_text("complete")
    expect(page.locator("#trial-record")).to_contain_text("bf16")
    expect(page.locator("#trial-manifest")).to_contain_text("NVIDIA H100 80GB HBM3")
    expect(page.locator("#act-params tbody tr")).to_have_count(2 * len(SITES))
    expect(page.locator("#trial-params")).to_contain_text("activation")
    assert len(series_names(page, "chart-epochs")) == 2
    page.select_option("#site-select", SITES[-1])  # per-channel: the envelope is drawn as a band
    page.wait_for_function(
        """() => echarts.getInstanceByDom(document.getElementById('chart-df')).getOption()
                 .series.some(s => s.id === 'trained-band-high')"""
    )
    page.screenshot(path=str(SCREENSHOTS / "trial-learned-curves.png"), full_page=True)
    assert_clean(page)


def test_failed_trial_shows_reason_and_log_tail(page: Any, server: Server) -> None:
    """A failed trial says why, at which epoch, and shows the end of its log."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("failing", 6))
    worker = FakeWorker(store, "w-failing")
    run = worker.start(study.id)
    while run is not None and run.family == "relu":  # a family that learns: it has a section
        worker.complete(run, curve_of(run.family, run.params, 2))
        run = worker.start(study.id)
    assert run is not None
    worker.fail(
        run, "diverged", "loss became NaN at step 17", "step 16: loss 3.2\nstep 17: loss nan\n"
    )
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}/trials/{run.trial.number}")
    expect(page.locator("#trial-state")).to_have_text("failed")
    expect(page.locator("#trial-failure")).to_contain_text("diverged")
    expect(page.locator("#trial-failure")).to_contain_text("loss became NaN at step 17")
    expect(page.locator("#trial-log")).to_contain_text("step 17: loss nan")
    expect(page.locator("#chart-f .chart-note")).to_contain_text("no activation curves")
    page.wait_for_function("() => !!document.querySelector('#chart-epochs canvas')")
    assert_clean(page)


def test_running_trial_refreshes_in_place(page: Any, server: Server) -> None:
    """A running trial's epochs appear as they are reported; the record arrives at the end."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("live-trial", 6))
    worker = FakeWorker(store, "w-live-trial")
    run = worker.start(study.id)
    while run is not None and run.family == "relu":  # a family that learns: curves arrive
        worker.complete(run, curve_of(run.family, run.params, 2))
        run = worker.start(study.id)
    assert run is not None
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}/trials/{run.trial.number}")
    expect(page.locator("#trial-state")).to_have_text("running")
    expect(page.locator("#chart-epochs .chart-note")).to_contain_text("Waiting")
    worker.complete(run, curve_of(run.family, run.params, 3))
    expect(page.locator("#trial-state")).to_have_text("complete", timeout=10_000)
    page.wait_for_function("() => !!document.querySelector('#chart-f canvas')")
    assert_clean(page)


def test_relu_trial_has_no_learned_activation_section(page: Any, server: Server) -> None:
    """ReLU learns nothing: no "Learned activation" curves over it, a sentence saying why; an SMU
    trial of the same study keeps its section. Data preparation is timed apart."""
    store = server.store
    study, _ = store.studies.create(store.users.get_by_name("admin"), spec_text("relu-fixed", 6))
    worker = FakeWorker(store, "w-relu-fixed")
    numbers: dict[str, int] = {}
    while not {"relu", "smu"} <= set(numbers):
        run = worker.start(study.id)
        assert run is not None
        worker.complete(run, curve_of(run.family, run.params, 2))
        numbers.setdefault(run.family, run.trial.number)
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}/trials/{numbers['relu']}")
    expect(page.locator("#trial-state")).to_have_text("complete")
    expect(page.locator("#fixed-activation")).to_contain_text("relu has no learnable parameters")
    expect(page.locator("#curves-panel")).to_be_hidden()
    expect(page.locator("#act-params-box")).to_be_hidden()
    # Decoding the data set (16.4 s) and moving it to the device (0.8 s), apart from training.
    times = page.locator("#trial-times")
    expect(times).to_have_text("data prep 17 s · training 9.5 s · evaluation 0.7 s")
    expect(times.locator(".data-prep")).to_have_attribute(
        "title", "decoding the data set 16 s · to the device 0.8 s"
    )
    expect(page.locator("#trial-cards")).to_contain_text("incl. data prep 17 s")
    assert_clean(page)

    page.goto(f"{server.url}/studies/{study.id}/trials/{numbers['smu']}")
    page.wait_for_function("() => !!document.querySelector('#chart-f canvas')")
    expect(page.locator("#curves-panel")).to_be_visible()
    expect(page.locator("#fixed-activation")).to_be_hidden()
    assert_clean(page)
