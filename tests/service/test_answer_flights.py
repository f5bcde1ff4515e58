"""One computation per change: requests missing the same answer at once wait for the first.

(service.api.etag.Flights) They wait in the event loop, not in a request thread; a leader
without an answer lets them compute their own.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.polls import max_stale
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


def test_while_one_computes_polls_accepting_it_get_the_older_answer(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a change, while one request computes the new answer: a poll holding the older tag
    and accepting an older answer (max-stale) gets a 304 at once, one without a copy gets the
    older answer under its own tag, and a request that accepts none waits for the new one.
    Only the leader computes."""
    owner, path = _changed_study(store, "stale")
    before = client.get(path, headers=owner.headers)
    assert before.status_code == 200
    old_tag = before.headers["ETag"]
    add_trial(store, int(path.split("/")[4]), value=0.9)  # a change: a new tag, nothing kept
    calls = _slow_leaderboard(monkeypatch)
    stale = {**owner.headers, "Cache-Control": "max-stale=60"}
    with ThreadPoolExecutor(CALLERS) as pool:
        leader = pool.submit(client.get, path, headers=owner.headers)
        time.sleep(0.2)  # the leader is computing (0.5 s)
        polls = [
            pool.submit(client.get, path, headers={**stale, "If-None-Match": old_tag})
            for _ in range(4)
        ]
        loads = [pool.submit(client.get, path, headers=stale) for _ in range(4)]
        strict = pool.submit(client.get, path, headers=owner.headers)
        new = leader.result()
        poll_answers = [f.result() for f in polls]
        load_answers = [f.result() for f in loads]
        waited = strict.result()
    assert new.status_code == 200 and new.headers["ETag"] != old_tag
    assert all(a.status_code == 304 and a.headers["ETag"] == old_tag for a in poll_answers)
    for answer in load_answers:
        assert answer.status_code == 200 and answer.headers["ETag"] == old_tag
        assert answer.content == before.content
    assert waited.content == new.content and waited.headers["ETag"] == new.headers["ETag"]
    _wait_for(lambda: len(client.app.state.flights) == 0)  # type: ignore[attr-defined]
    assert len(calls) == 1


def test_max_stale_reads_the_directive_as_rfc_9111_writes_it() -> None:
    assert max_stale("max-stale=10") == 10
    assert max_stale('no-transform, Max-Stale="2.5"') == 2.5
    assert max_stale("max-stale") == math.inf  # any age
    assert max_stale("no-cache") is None and max_stale(None) is None
    assert max_stale("max-stale=soon") is None  # malformed: not asked


def _wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the background computation did not land"
        time.sleep(0.02)


def test_a_poll_accepting_an_older_answer_gets_it_at_once_and_the_next_poll_the_new_one(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `Cache-Control: max-stale`, the first poll after a change gets the kept answer (its
    own tag) without waiting, a poll holding that tag a 304, while the current answer is computed
    once in the background; then every request gets the current one, computed once."""
    owner, path = _changed_study(store, "max-stale")
    before = client.get(path, headers=owner.headers)
    old_tag = before.headers["ETag"]
    add_trial(store, int(path.split("/")[4]), value=0.9)
    calls = _slow_leaderboard(monkeypatch)
    stale = {**owner.headers, "Cache-Control": "max-stale=60"}
    began = time.monotonic()
    first = client.get(path, headers=stale)
    held = client.get(path, headers={**stale, "If-None-Match": old_tag})
    assert time.monotonic() - began < 0.5  # the computation takes 0.5 s: nobody waited for it
    assert first.status_code == 200 and first.headers["ETag"] == old_tag
    assert first.content == before.content
    assert held.status_code == 304 and held.headers["ETag"] == old_tag
    flights = client.app.state.flights  # type: ignore[attr-defined]
    _wait_for(lambda: len(flights) == 0)
    fresh = client.get(path, headers=owner.headers)  # a strict read: the current answer, kept
    assert fresh.status_code == 200 and fresh.headers["ETag"] != old_tag
    again = client.get(path, headers={**stale, "If-None-Match": old_tag})
    assert again.status_code == 200 and again.content == fresh.content
    assert len(calls) == 1


def test_an_older_answer_past_the_accepted_age_is_not_sent(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max-stale bounds the older answer's age (since it was computed): past it, the poll waits
    for the current answer, as a request without the directive does."""
    owner, path = _changed_study(store, "too-old")
    old_tag = client.get(path, headers=owner.headers).headers["ETag"]
    time.sleep(0.3)
    add_trial(store, int(path.split("/")[4]), value=0.9)
    calls = _slow_leaderboard(monkeypatch)
    answer = client.get(path, headers={**owner.headers, "Cache-Control": "max-stale=0.2"})
    assert answer.status_code == 200 and answer.headers["ETag"] != old_tag
    assert len(calls) == 1
