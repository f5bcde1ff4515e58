"""A process killed in the middle of a stage transition: the next advance() finishes it, once.

The advancing process is SIGKILLed just before a chosen SQL statement (advance_kill_at.py):
inside the compare-and-set transaction (nothing happened), after it committed and before the
setup lease, after the lease and before Optuna's study, and between two enqueued trials. A fresh
process (another API instance or worker, here with a short setup lease) then advances: the stage
exists once, each Optuna study holds the baseline and every promoted configuration exactly once,
and the campaign runs to its end.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.store import Store
from service.store.campaigns import PENDING_NOTE, Campaigns
from tests.service.campaign_helpers import campaign, stage_studies, train_study, waiting_params
from tests.service.conftest import BACKENDS, Person, migrated_database, new_person

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SCRIPT = Path(__file__).with_name("advance_kill_at.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def own_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: the session's is shared with a running server whose
    background loop advances campaigns too, and would move this one before the killed process."""
    with migrated_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def own(own_url: str) -> Iterator[tuple[str, Store, Person]]:
    """The database's URL, a store on it and a user."""
    store = Store.open(own_url)
    yield own_url, store, new_person(store, "alice")
    store.dispose()


def _advance_killed(url: str, pattern: str, nth: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), pattern, url, str(nth)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _train_stage(store: Store, campaign_id: int, stage: int) -> None:
    for study in stage_studies(store, campaign_id, stage):
        train_study(store, study.id)


# (regex of the statement to die before, which match, the stage index the campaign is left at)
KILL_POINTS = [
    pytest.param(r"INSERT INTO as_studies", 1, 0, id="inside-the-cas-transaction"),
    pytest.param(r"UPDATE as_campaigns SET setup_at", 1, 1, id="after-the-cas-before-the-lease"),
    pytest.param(r"INSERT INTO studies\b", 1, 1, id="before-the-optuna-study"),
    pytest.param(r"INSERT INTO trials\b", 2, 1, id="between-two-enqueued-trials"),
]


@pytest.mark.parametrize(("pattern", "nth", "left_at"), KILL_POINTS)
def test_a_transition_killed_midway_is_finished_once_by_the_next_advance(
    own: tuple[str, Store, Person], pattern: str, nth: int, left_at: int
) -> None:
    db_url, store, alice = own
    info, _ = store.campaigns.create(alice.info, campaign())
    _train_stage(store, info.id, 0)

    killed = _advance_killed(db_url, pattern, nth)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    left = store.campaigns.get(info.id)
    assert left.stage == left_at and left.status == "running"
    if left_at == 1:  # the stage exists, not set up: its study waits, paused, unclaimable
        assert not left.stage_ready
        (pending,) = stage_studies(store, info.id, 1)
        assert pending.status == "paused" and pending.error == PENDING_NOTE
        assert store.runs.claim_next("w-test", [pending.id]) is None

    recovering = Campaigns(store.db, setup_lease_s=0.0)  # the dead process's lease is void
    assert recovering.advance() == [info.id]
    assert recovering.advance() == []
    ready = store.campaigns.get(info.id)
    assert ready.stage == 1 and ready.stage_ready and len(ready.promotions) == 1
    (promote,) = stage_studies(store, info.id, 1)
    assert promote.status == "queued" and promote.error is None
    enqueued = promote.spec["enqueue"]
    assert enqueued == ready.promotions[0]["carried"]
    assert waiting_params(store, promote.optuna_name) == [{"activation": "relu"}, *enqueued]

    for stage in (1, 2):  # and on to the end
        _train_stage(store, info.id, stage)
        assert recovering.advance() == [info.id]
    done = store.campaigns.get(info.id)
    assert done.status == "completed" and [
        len(stage_studies(store, info.id, s)) for s in range(3)
    ] == [
        1,
        1,
        2,
    ]
