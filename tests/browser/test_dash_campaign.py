"""The campaign page: the funnel of a real three-stage campaign, its verdicts and transfer table,
and the way there from a stage study's page.

The campaign is created and advanced through the store, as the API and the workers do it; its
trials are trained by the campaign tests' worker stand-in on a known landscape (SMU best, ReLU
the baseline), so the verdicts on the page are known.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Server, assert_clean, sign_in
from playwright.sync_api import expect
from test_dash_fit import WINDOW, assert_fits

from service.store import Store
from tests.service.campaign_helpers import at_stage, campaign, stage_studies, train_study

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def run_campaign(store: Store, name: str, stages: int) -> int:
    """A campaign whose first `stages` stages were trained to the end (and moved on)."""
    admin = store.users.get_by_name("admin")
    assert admin is not None
    info, _ = store.campaigns.create(admin, campaign(name=name))
    for stage in range(stages):
        at_stage(store, info.id, stage)
        for study in stage_studies(store, info.id, stage):
            train_study(store, study.id)
    at_stage(store, info.id, stages)
    return info.id


def funnel_row(page: Any, index: int) -> Any:
    return page.locator(f"#funnel-table tbody tr[data-stage='{index}']")


def test_campaign_page_shows_the_funnel_verdicts_and_transfer_table(
    page: Any, server: Server
) -> None:
    store = server.store
    campaign_id = run_campaign(store, "dash-funnel", stages=3)
    detail = store.campaigns.get(campaign_id)
    assert detail.status == "completed"
    sign_in(page, server)
    # The studies page lists campaigns: the way to this one's page.
    listed = page.locator(f"#campaigns-table tbody tr[data-campaign-id='{campaign_id}']")
    expect(listed).to_contain_text("dash-funnel")
    expect(listed.locator(".badge")).to_have_text("completed")
    listed.locator("a").click()
    page.wait_for_url(f"{server.url}/campaigns/{campaign_id}")

    expect(page.locator("#campaign-status")).to_have_text("completed")
    expect(page.locator("#campaign-baseline")).to_have_text("relu")
    rows = page.locator("#funnel-table tbody tr")
    expect(rows).to_have_count(3)
    for index, name in enumerate(("screen", "promote", "confirm")):
        row = funnel_row(page, index)
        expect(row.locator("td").first).to_contain_text(f"{index + 1}. {name}")
        expect(row.locator("td").nth(1)).to_have_text("ended")
    # Promotion as numbers: the screen's top 2 per family, then the promote stage's top 1; each
    # later stage entered with what the one before let out, plus the baseline.
    screen, promote, confirm = (funnel_row(page, i) for i in range(3))
    left_screen = int(screen.locator("td.left").inner_text().split()[0])
    entered_promote = int(promote.locator("td.entered").inner_text())
    left_promote = int(promote.locator("td.left").inner_text().split()[0])
    assert entered_promote == left_screen + 1
    assert int(confirm.locator("td.entered").inner_text()) == left_promote + 1
    expect(confirm.locator("td.left")).to_have_text("–")
    # The funnel narrows: the bars are as wide as each stage's share of the widest.
    widths = [
        funnel_row(page, i)
        .locator(".funnel-bar span")
        .evaluate("e => e.getBoundingClientRect().width")
        for i in range(3)
    ]
    assert widths[0] > widths[1] > 0 and widths[2] > 0
    # Time spent per stage, and links to each stage's studies: two models in the confirm stage.
    expect(screen.locator("td").nth(6)).not_to_have_text("–")
    confirm_links = confirm.locator("td").nth(2).locator("a")
    expect(confirm_links).to_have_count(2)
    expect(confirm_links.first).to_contain_text("resnet18")
    expect(confirm_links.nth(1)).to_contain_text("mobilenet_v2")
    # Verdicts per stage: SMU beats ReLU on both models of the confirm stage.
    smu_verdicts = confirm.locator(".family-verdicts", has_text="smu").locator(".verdict.better")
    expect(smu_verdicts).to_have_count(2)
    expect(confirm).to_contain_text("per model: resnet18 · mobilenet_v2")

    # Current verdicts: the confirm stage's cells, on test accuracy.
    expect(page.locator("#verdicts-note")).to_contain_text("stage 3 (confirm) · test accuracy")
    smu_rows = page.locator("#verdicts-table tbody tr[data-family='smu']")
    expect(smu_rows).to_have_count(2)
    expect(smu_rows.first.locator(".verdict")).to_have_text("better")
    expect(smu_rows.first.locator("td.delta")).to_contain_text("pp")
    expect(smu_rows.first.locator("td").nth(3).locator(".ci")).not_to_contain_text("+")

    # The transfer table: a row per family, a column per model, Δ with its interval and verdict.
    transfer = page.locator("#transfer-table")
    expect(transfer.locator("thead th")).to_have_text(["Family", "resnet18", "mobilenet_v2"])
    smu = transfer.locator("tbody tr[data-family='smu'] td")
    expect(smu).to_have_count(3)
    for column in (1, 2):
        expect(smu.nth(column)).to_contain_text("pp")
        expect(smu.nth(column).locator(".ci")).to_contain_text("[+")
        expect(smu.nth(column).locator(".verdict")).to_have_text("better")
    relu = transfer.locator("tbody tr[data-family='relu'] td")
    expect(relu.nth(1).locator(".verdict")).to_have_text("baseline")
    # It fits a 1,400 px window, as every page does (issue 18).
    page.set_viewport_size({"width": WINDOW, "height": 900})
    assert_fits(page, "campaign")
    assert_clean(page)


def test_a_stage_study_links_to_its_campaign_and_back(page: Any, server: Server) -> None:
    store = server.store
    campaign_id = run_campaign(store, "dash-link", stages=1)  # now at the promote stage
    (study,) = stage_studies(store, campaign_id, 1)
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    link = page.locator("#campaign-link a")
    expect(page.locator("#campaign-link")).to_contain_text("Stage 2 (resnet18) of")
    link.click()
    page.wait_for_url(f"{server.url}/campaigns/{campaign_id}")
    expect(funnel_row(page, 0).locator("td").nth(1)).to_have_text("ended")
    expect(funnel_row(page, 2).locator("td").nth(1)).to_have_text("waiting")
    # No transfer yet: the page says which stage will make the table.
    expect(page.locator("#transfer-table tbody")).to_contain_text("Stage 3 (confirm) runs")
    expect(funnel_row(page, 2).locator("td.entered")).to_have_text("–")
    # Its owner (here the admin) pauses and resumes the whole campaign from the page.
    page.locator("#campaign-actions button[data-action='pause']").click()
    expect(page.locator("#campaign-status")).to_have_text("paused")
    assert store.studies.get(study.id).status == "paused"
    page.locator("#campaign-actions button[data-action='resume']").click()
    expect(page.locator("#campaign-status")).to_have_text("running")
    expect(page.locator("#campaign-actions button[data-action='pause']")).to_be_visible()
    # The funnel links to the stage's study: back where we came from.
    funnel_row(page, 1).locator(f"a[data-study-id='{study.id}']").click()
    page.wait_for_url(f"{server.url}/studies/{study.id}")
    expect(page.locator("#campaign-link")).to_be_visible()
    assert_clean(page)


def test_an_unknown_campaign_is_a_404_page(page: Any, server: Server) -> None:
    sign_in(page, server)
    page.watch.allow(404, "/campaigns/999999")
    response = page.goto(f"{server.url}/campaigns/999999")
    assert response is not None and response.status == 404
    expect(page.locator("main")).to_contain_text("campaign 999999")
    assert_clean(page)
