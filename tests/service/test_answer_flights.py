"""One computation per change: requests missing the same answer at once wait for the first.

(service.api.etag.Flights) They wait in the event loop, not in a request thread; a leader
without an answer lets them compute their own.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.routes import exports
from service.store import Store
from tests.service.conftest import Person, add_trial, new_person, spec

pytestmark = pytest.mark.timeout(300)
CALLERS = 16  # more than the 12 request threads: waiters must not hold one


def _slow_leaderboard(monkeypatch: pytest.MonkeyPatch, fail_first: bool = False) -> list[int]:
    """Count the leaderboard's computations, each taking 0.5 s; maybe fail the first."""
    calls: list[int] = []
    lock = threading.Lock()
    original = exports.leaderboard

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(len(calls))
            first = len(calls) == 1
        time.sleep(0.5)
        if fail_first and first:
            raise RuntimeError("the leader's computation failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(exports, "leaderboard", counted)
    return calls


def _at_once(client: TestClient, person: Person, path: str) -> list[httpx.Response]:
    with ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(lambda _: client.get(path, headers=person.headers), range(CALLERS)))


def _changed_study(store: Store, name: str) -> tuple[Person, str]:
    owner = new_person(store, name)
    study, _ = store.studies.create(owner.info, spec(n_trials=3))
    add_trial(store, study.id, value=0.7)
    return owner, f"/api/v1/studies/{study.id}/leaderboard"


def test_requests_missing_one_answer_compute_it_once(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, path = _changed_study(store, "flights")
    calls = _slow_leaderboard(monkeypatch)
    answers = _at_once(client, owner, path)
    assert [a.status_code for a in answers] == [200] * CALLERS
    assert len({a.content for a in answers}) == 1
    assert len({a.headers["ETag"] for a in answers}) == 1
    assert len(calls) == 1
    assert len(client.app.state.flights) == 0  # type: ignore[attr-defined]


def test_a_leader_without_an_answer_lets_the_others_compute(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, path = _changed_study(store, "flights-fail")
    calls = _slow_leaderboard(monkeypatch, fail_first=True)
    answers = _at_once(client, owner, path)
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(500) == 1  # the leader's own request
    assert statuses.count(200) == CALLERS - 1
    assert len(calls) == 2  # the lead passed to one waiter; the others took its answer
    assert len(client.app.state.flights) == 0  # type: ignore[attr-defined]
