"""Acceptance 3 of issue 18: the trial, study, studies and workers pages fit a 1,400 px window,
with realistic long content (a manifest's resolved training options, long names, paths, messages
and log lines), with no horizontal scroll; a screenshot of each lands in test-output/browser/.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SCREENSHOTS, Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker, curve_of
from test_dash_studies import spec_text
from test_dash_study import run_study

pytestmark = pytest.mark.browser

WINDOW = 1400
LONG_NAME = "resnet18-cifar10-smu-pau-opau-swish-vs-relu-lr-weight-decay-and-scope-sweep-2026-12"
LONG_PATH = "/mnt/shared/datasets/cifar10/" + "a-very-long-directory-name-without-spaces/" * 4
LONG_LOG = "step 17: " + "loss=nan;grad_norm=inf;lr=0.05;" * 12


@pytest.fixture
def narrow(page: Any) -> Any:
    """The watched `page` (CSP violations fail), in a 1,400 px wide window."""
    page.set_viewport_size({"width": WINDOW, "height": 900})
    return page


def overflow(page: Any) -> dict[str, Any]:
    """How wide the page is against the window, and the widest elements sticking out."""
    return dict(page.evaluate(
        """() => {
             const width = window.innerWidth;
             const wide = [...document.querySelectorAll("body *")]
               .filter((e) => e.getBoundingClientRect().right > width + 1)
               .slice(0, 5).map((e) => `${e.tagName}#${e.id}.${e.className}`);
             // Tables scroll in their own box at worst; these must not even do that.
             const cut = [...document.querySelectorAll(".table-wrap")]
               .filter((w) => w.scrollWidth > w.clientWidth + 1)
               .map((w) => `${w.firstElementChild.id}: ${w.scrollWidth} > ${w.clientWidth}`);
             return { scrollWidth: document.scrollingElement.scrollWidth, innerWidth: width, wide, cut };
           }"""
    ))  # fmt: skip


def assert_fits(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"fit-{name}.png"), full_page=True)
    found = overflow(page)
    assert found["scrollWidth"] <= found["innerWidth"], f"{name} page scrolls sideways: {found}"
    assert not found["cut"], f"{name} page: a table scrolls sideways in its box: {found}"


def long_study(server: Server) -> tuple[int, int, int]:
    """A study with long texts everywhere: (study id, a complete trial, a failed trial)."""
    store = server.store
    admin = store.users.get_by_name("admin")
    spec = spec_text(LONG_NAME, 8).replace(
        "description: ReLU vs SMU vs PAU on LeNet (4,000-image CIFAR-10 subset, 2 epochs)",
        f"description: data at {LONG_PATH} (a long description that must wrap, not widen)",
    )
    study, _ = store.studies.create(admin, spec)
    worker = FakeWorker(store, "w-gpu-node-with-a-long-hostname.cluster.example.org-0")  # 54
    store.workers.register(
        worker.worker_id,
        hostname="gpu-node-with-a-long-hostname.cluster.example.org",
        pid=4242,
        device="cuda:0 (NVIDIA H100 80GB HBM3, MIG 3g.40gb, " + "x" * 60 + ")",
        slot=0,
        version="test",
    )
    done = worker.start(study.id)
    assert done is not None
    worker.complete(done, curve_of(done.family, done.params, 3))
    failed = worker.start(study.id)
    assert failed is not None
    worker.fail(failed, "diverged", f"loss became NaN reading {LONG_PATH}", LONG_LOG + "\n")
    running = worker.start(study.id)
    assert running is not None
    worker.beat(running, epoch=0, step=120)
    return study.id, done.trial.number, failed.trial.number


def test_every_page_fits_a_1400_px_window(narrow: Any, server: Server) -> None:
    """Trial (complete and failed), study, studies and workers pages: no horizontal scroll."""
    study_id, done, failed = long_study(server)
    sign_in(narrow, server)
    narrow.goto(f"{server.url}/studies/{study_id}/trials/{done}")
    narrow.wait_for_selector("#trial-manifest table")
    narrow.wait_for_function("() => !!document.querySelector('#chart-epochs canvas')")
    manifest = narrow.locator("#trial-manifest")
    assert "resolved_training" in manifest.inner_text()
    narrow.locator("details").evaluate("d => d.open = true")  # the resolved config too
    assert_fits(narrow, "trial")
    # The resolved training options are pretty-printed in a box of their own.
    box = manifest.locator(".json-box").first
    assert box.inner_text().count("\n") > 10

    narrow.goto(f"{server.url}/studies/{study_id}/trials/{failed}")
    narrow.wait_for_selector("#trial-failure:not(.hidden)")
    narrow.wait_for_function("() => document.querySelector('#trial-log').textContent.length > 50")
    assert_fits(narrow, "trial-failed")

    narrow.goto(f"{server.url}/studies/{study_id}")
    narrow.wait_for_function("() => !!document.querySelector('#chart-families canvas')")
    assert_fits(narrow, "study")

    # A study with every family's intervals, verdicts and counts in its leaderboard.
    compared = run_study(server.store, "fit-comparison", 40, complete=30, pruned=3, failed=1)
    narrow.goto(f"{server.url}/studies/{compared}")
    narrow.wait_for_function("() => !!document.querySelector('#chart-params canvas')")
    narrow.wait_for_selector("#leaderboard .mean-ci .ci")
    assert_fits(narrow, "study-comparison")

    narrow.goto(f"{server.url}/")
    narrow.wait_for_selector(f'#studies-table tbody tr[data-id="{study_id}"]')
    narrow.click("#new-study")  # the spec editor open too
    assert_fits(narrow, "studies")

    narrow.goto(f"{server.url}/workers")
    narrow.wait_for_selector("#workers-table tbody tr[data-id]")
    assert_fits(narrow, "workers")
    assert_clean(narrow)
