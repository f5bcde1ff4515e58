"""The study page polls conditionally: If-None-Match on every poll, 304 while nothing changed,
an older answer accepted (Cache-Control: max-stale), and a change still shows (the dashboard server runs two processes: tests/support.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker, curve_of
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SPEC = """
version: 1
name: polled
dataset: {name: cifar10}
model: {name: proxy}
training: {epochs: 3}
activations: {relu: {}, smu: {alpha: {low: 0.0, high: 0.5}}}
n_trials: 3
"""


def test_the_study_page_polls_with_if_none_match_and_takes_304(page: Any, server: Server) -> None:
    store = server.store
    admin = store.users.get_by_name("admin")
    study, _ = store.studies.create(admin, SPEC)
    worker = FakeWorker(store, "w-polled")
    first = worker.start(study.id)
    assert first is not None
    worker.complete(first, curve_of(first.family, first.params, 3))
    running = worker.start(study.id)  # running: the page keeps polling
    assert running is not None

    polls: list[tuple[str, str | None]] = []  # (path, If-None-Match sent)
    answers: list[tuple[str, int]] = []
    watched = (f"/api/v1/studies/{study.id}", f"/dashboard/data/studies/{study.id}/summary")

    def path_of(url: str) -> str:
        return url.split("//", 1)[1].split("/", 1)[1].split("?", 1)[0].join(["/", ""])

    accepts_older: list[tuple[str, str | None]] = []  # (path, Cache-Control sent)

    def sent(request: Any) -> None:
        polls.append((path_of(request.url), request.headers.get("if-none-match")))
        if request.headers.get("if-none-match"):  # a repeat poll: it may keep its copy
            accepts_older.append((path_of(request.url), request.headers.get("cache-control")))

    page.on("request", sent)
    page.on("response", lambda r: answers.append((path_of(r.url), r.status)))
    sign_in(page, server)
    page.goto(f"{server.url}/studies/{study.id}")
    expect(page.locator("#count-value")).to_have_text("1 / 3")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all((p, 304) in answers for p in watched):
        page.wait_for_timeout(500)
    for path in watched:
        assert (path, 304) in answers, f"no 304 for {path}: {answers}"
        conditional = [tag for p, tag in polls if p == path and tag]
        assert conditional and all(tag.startswith('W/"') for tag in conditional)
        # A repeat poll accepts keeping its copy for up to 10 s while the server recomputes.
        assert {cc for p, cc in accepts_older if p == path} == {"max-stale=10"}

    worker.complete(running, curve_of(running.family, running.params, 3))  # a change
    expect(page.locator("#count-value")).to_have_text("2 / 3", timeout=20_000)
    assert_clean(page)
