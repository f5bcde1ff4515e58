"""A multi-objective study's page draws accuracy against cost with its Pareto front, and lists
the front; a single-objective study's page shows none of it."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
import yaml
from conftest import SCREENSHOTS, Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker, curve_of
from playwright.sync_api import expect
from test_dash_studies import spec_text

from service.store import Cost, Store

pytestmark = pytest.mark.browser

DEVICE = "NVIDIA H100 80GB HBM3 (cuda:0)"


def play_costs(store: Store, study_id: int, trials: int) -> None:
    """Trials finished as a worker finishes a cost study's: [accuracy, cost] told to Optuna."""
    worker = FakeWorker(store, f"w-pareto-{study_id}")
    for i in range(trials):
        run = worker.start(study_id)
        assert run is not None
        epochs = curve_of(run.family, run.params, 2)
        value, cost = epochs[-1], 1.0 + 0.15 * ((i * 7) % 5)  # made-up step-time ratios
        for epoch, acc in enumerate(epochs):
            store.runs.report_epoch(
                run.run_id, epoch, train_loss=1.0, val_acc=acc, img_per_s=1000.0,
                elapsed_s=1.0 + epoch, worker_id=worker.worker_id,
            )  # fmt: skip
        assert store.runs.finish(
            run.run_id, state="complete", value=value, test_acc=value - 0.01,
            cost=Cost("step_time", cost, DEVICE),
        )  # fmt: skip
        run.study.tell(run.trial, [value, cost])


def test_the_front_is_drawn_and_listed(page: Any, server: Server) -> None:
    store = server.store
    admin = store.users.get_by_name("admin")
    spec = yaml.safe_load(spec_text("pareto-page", 6))
    spec.update(objectives=["accuracy", "step_time"], pruner={"name": "none"})
    study, _ = store.studies.create(admin, spec)
    play_costs(store, study.id, 6)
    best = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna).best_trials
    front = sorted(best, key=lambda t: (t.values[1], -t.values[0], t.number))

    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    panel = page.locator("#pareto-panel")
    expect(panel).to_be_visible()
    page.wait_for_function("() => !!document.querySelector('#chart-pareto canvas')")
    rows = page.locator("#pareto-table tbody tr")
    expect(rows).to_have_count(len(front))
    assert [int(n) for n in rows.evaluate_all("rs => rs.map(r => r.dataset.number)")] == [
        t.number for t in front
    ]
    assert panel.get_attribute("data-front") == str([t.number for t in front]).replace(" ", "")
    expect(rows.first.locator("td").nth(4)).to_have_text(DEVICE)
    expect(page.locator("#pareto-note")).to_contain_text(f"measured on {DEVICE}")
    drawn = page.evaluate(
        """() => {
          const option = echarts.getInstanceByDom(document.getElementById('chart-pareto')).getOption();
          const series = Object.fromEntries(option.series.map(s => [s.id, s.data.length]));
          const line = option.series.find(s => s.id === 'front');
          return [series, line.data.map(d => d.value[2])];
        }"""
    )
    assert drawn == [{"trials": 6 - len(front), "front": len(front)}, [t.number for t in front]]
    page.screenshot(path=str(SCREENSHOTS / "pareto-front.png"), full_page=True)
    assert_clean(page)


def test_a_single_objective_study_has_no_pareto_panel(page: Any, server: Server) -> None:
    store = server.store
    admin = store.users.get_by_name("admin")
    study, _ = store.studies.create(admin, spec_text("no-pareto", 2))
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    expect(page.locator("#study-status")).to_have_text("queued")
    page.wait_for_function(
        "() => !!document.querySelector('#chart-history canvas, #chart-history .chart-note')"
    )
    expect(page.locator("#pareto-panel")).to_be_hidden()
    assert_clean(page)
