"""The API's answer cache computes one answer once when many requests miss it together."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.api import etag
from service.api.etag import Answer, AnswerCache


def test_one_request_leads_and_the_others_get_its_answer() -> None:
    cache = AnswerCache()
    assert cache.get_or_lead("k") == (None, True)  # the first miss leads
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(cache.get_or_lead, "k", 10.0) for _ in range(4)]
        time.sleep(0.2)
        assert not any(f.done() for f in waiting)  # they wait for the leader's answer
        answer = Answer(b'{"a": 1}', "application/json")
        cache.put("k", answer)
        cache.done("k")
        assert [f.result(5) for f in waiting] == [(answer, False)] * 4
    assert cache.get_or_lead("k") == (answer, False)


def test_a_leader_without_an_answer_lets_the_others_compute() -> None:
    cache = AnswerCache()
    assert cache.get_or_lead("k") == (None, True)
    result: list[tuple[Answer | None, bool]] = []
    waiter = threading.Thread(target=lambda: result.append(cache.get_or_lead("k", 10.0)))
    waiter.start()
    time.sleep(0.1)
    cache.done("k")  # e.g. the route answered 404: nothing kept
    waiter.join(5)
    assert result == [(None, False)]  # computes its own, not as a leader
    assert cache.get_or_lead("k") == (None, True)  # the next miss leads anew


def test_a_slow_leader_delays_the_others_only_so_long(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = AnswerCache()
    assert cache.get_or_lead("k") == (None, True)
    started = time.monotonic()
    assert cache.get_or_lead("k", 0.2) == (None, False)
    assert 0.15 < time.monotonic() - started < 2
    monkeypatch.setattr(etag, "LEAD_STALE_S", 0.0)  # a lead never ended is taken over
    assert cache.get_or_lead("k") == (None, True)
