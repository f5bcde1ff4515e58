"""The study page's evidence: each family's interval and verdict, the interval chart, and the
confirm button creating a linked study whose fresh seeds turn "promising" into "better"."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from conftest import SCREENSHOTS, Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker, curve_of
from playwright.sync_api import expect
from test_dash_studies import spec_text

from service.db import Training, TrainingState, utcnow
from service.store import Store

pytestmark = pytest.mark.browser

NOISE = [-0.0021, 0.0008, 0.0015, -0.0004, 0.0011]  # seed to seed, about ±0.2 points


def level(family: str) -> float:
    """Each family's true accuracy in this made-up world: the baseline 80 %, the others 83 %."""
    return 0.80 if family == "relu" else 0.83


def play(store: Store, study_id: int, trials: int, seeds: int, first_seed: int) -> set[str]:
    """Trials played by a worker, each leaving `seeds` trainings in the ledger."""
    worker = FakeWorker(store, f"w-{uuid.uuid4().hex[:6]}")
    families = set()
    for _ in range(trials):
        run = worker.start(study_id)
        assert run is not None
        worker.complete(run, curve_of(run.family, run.params, 2))
        families.add(run.family)
        with store.db.session() as session:
            for i in range(seeds):
                value = level(run.family) + NOISE[i]
                session.add(
                    Training(
                        study_id=study_id, run_id=run.run_id, key=uuid.uuid4().hex,
                        config_key=uuid.uuid4().hex, family=run.family, seed=first_seed + i,
                        state=TrainingState.COMPLETE, val_acc=value + 0.001, test_acc=value,
                        data_checksum="sha256:data", code_version="test", created_at=utcnow(),
                        finished_at=utcnow(),
                    )
                )  # fmt: skip
    return families


def test_intervals_verdicts_and_the_confirm_button(page: Any, server: Server) -> None:
    store = server.store
    admin = store.users.get_by_name("admin")
    study, _ = store.studies.create(admin, spec_text("evidence-page", 6))
    families = play(store, study.id, trials=4, seeds=3, first_seed=0)
    others = sorted(families - {"relu"})
    assert "relu" in families and others, families
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")

    # Each family: n trainings, mean with its interval, Δ with its interval, a verdict.
    row = page.locator(f'#leaderboard tr[data-family="{others[0]}"]')
    expect(row.locator(".mean-ci .ci")).to_have_text(re.compile(r"^\[\d+\.\d\d, \d+\.\d\d\]$"))
    expect(row.locator(".delta-ci .ci")).to_have_text(re.compile(r"^\[\+\d+\.\d\d, \+\d+\.\d\d\]$"))
    expect(row.locator(".verdict")).to_have_text("promising")  # search-time: never "better"
    expect(page.locator("#evidence-note")).to_contain_text("promising at most")
    expect(page.locator("#leaderboard")).not_to_contain_text("±")
    # The family chart draws each family's interval beside its box.
    page.wait_for_function("() => !!document.querySelector('#chart-families canvas')")
    drawn = page.evaluate(
        """() => echarts.getInstanceByDom(document.getElementById('chart-families')).getOption()
                 .series.filter(s => s.id === 'intervals').map(s => s.data.length)"""
    )
    assert drawn == [len(families)]

    # Confirm: one click makes the linked study.
    expect(page.locator("#confirm-box")).to_be_visible()
    page.fill("#confirm-seeds", "5")
    page.click("#confirm-button")
    link = page.locator("#confirmed-by a")
    expect(link).to_have_count(1)
    detail = page.request.get(f"{server.url}/api/v1/studies/{study.id}").json()
    assert len(detail["confirmed_by"]) == 1
    confirm_id = detail["confirmed_by"][0]["id"]
    confirm = page.request.get(f"{server.url}/api/v1/studies/{confirm_id}").json()
    assert confirm["confirms"]["id"] == study.id
    assert confirm["spec"]["seeds"] == 5 and confirm["n_trials"] == len(families)
    expect(link).to_have_attribute("href", f"/studies/{confirm_id}")
    page.screenshot(path=str(SCREENSHOTS / "evidence-search.png"), full_page=True)

    # The confirm study's page links back, has no confirm button, and judges on test accuracy.
    played = play(store, confirm_id, trials=len(families), seeds=5, first_seed=1000)
    assert played == families
    link.click()
    page.wait_for_url(f"{server.url}/studies/{confirm_id}")
    expect(page.locator("#confirms-link a")).to_have_attribute("href", f"/studies/{study.id}")
    expect(page.locator("#confirm-box")).to_be_hidden()
    expect(page.locator("#evidence-note")).to_contain_text("fresh seeds on test accuracy")
    confirmed_row = page.locator(f'#leaderboard tr[data-family="{others[0]}"]')
    expect(confirmed_row.locator(".verdict")).to_have_text("better")
    expect(confirmed_row.locator("td:nth-child(2)")).to_have_text("5")

    # And the source study now shows the confirmation's verdict.
    page.locator("#confirms-link a").click()
    page.wait_for_url(f"{server.url}/studies/{study.id}")
    expect(row.locator(".verdict")).to_have_text("better")
    expect(page.locator("#evidence-note")).to_contain_text(f"confirm study #{confirm_id}")
    page.screenshot(path=str(SCREENSHOTS / "evidence-confirmed.png"), full_page=True)
    assert_clean(page)
