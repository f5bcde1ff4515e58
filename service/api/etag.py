"""Conditional GETs for the routes a dashboard or `--follow` polls: ETags, 304s, shared answers.

An answer's ETag comes from what the database says changed, read before the answer is built:

- `study`: the study's change counter (as_studies.version, bumped by triggers on every write a
  read of it shows: migration 0008) and those of its confirm studies (a leaderboard shows their
  trainings) and of the study it confirms. One indexed read.
- `live`: the same plus each running trial's last heartbeat, for answers that show live progress
  (the trial list, one trial, learning curves): a heartbeat bumps no counter.
- `studies`: the number of studies, the sum of their counters and the newest id (the list).
- `campaign`: the campaign row's status, stage and last change, and the counters of its stages'
  studies; while it runs, also the half-minute (a running stage's wall time grows by itself).

A request whose `If-None-Match` names the current tag gets 304 and no body, so a poll of an
unchanged study costs the token check and that one read. Reading the tag first makes an answer
at least as new as its tag: a change committed in between shows in the answer and changes the
tag of the next poll, never the other way round.

Answers are also kept per process (`AnswerCache`), keyed by route, query and tag, so the 50
dashboards polling one study cost one computation per change, not 50. Every user sees the same
answer on these routes (all users read all studies); the token is still checked first.

When a change makes an answer miss, the first request computes it (it leads the flight of that
answer: `Flights`, one per route, tag and process) and the others asking meanwhile wait for it
in the event loop, holding no request thread (the route the leader runs needs one), for
`FLIGHT_WAIT_S` at most; a leader without an answer (an error, a 404) hands the lead to one of
them. A poll that accepts an older answer (max-stale) is not made to wait: service.api.polls.

A route is made conditional by declaring one of the dependencies at the end (`STUDY`, `LIVE`,
`STUDIES`, `CAMPAIGN`); service.api.polls, a middleware, finds such a route for each GET and
does the rest (token, tag, 304, kept answer, flight) before FastAPI's routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, Header
from sqlalchemy import BigInteger, Integer, bindparam, func, literal, null, or_, select, union_all

from service.api.deps import CurrentUser
from service.db import Campaign, CampaignStatus, Run, RunState, Study
from service.db.types import UTCDateTime
from service.store import Database

Kind = Literal["study", "live", "studies"]
IF_NONE_MATCH_MAX = 2000  # characters: a longer If-None-Match header is refused (422)
WALL_CLOCK_S = 30  # a running campaign's tag changes at least this often
CACHE_CONTROL = "private, no-cache"  # store it, but ask again (If-None-Match) before using it
FLIGHT_WAIT_S = 5.0  # the longest a request waits for another's answer before computing its own
SERVICE = Path(__file__).resolve().parents[1]


def _code_fingerprint() -> str:
    """Changes with the code that shapes answers: a tag from an older server never matches."""
    digest = hashlib.blake2b(digest_size=8)
    with contextlib.suppress(metadata.PackageNotFoundError):
        digest.update(metadata.version("actsearch").encode())
    for path in sorted(SERVICE.rglob("*.py")):
        digest.update(str(path.relative_to(SERVICE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


CODE = _code_fingerprint()


# -- tags -------------------------------------------------------------------------------------
def _study_rows(live: bool) -> Any:
    """(kind, id, version, heartbeat) rows: the study and its confirm links, its running trials.

    Built once per kind (the study id is a parameter): every poll runs it."""
    study_id = bindparam("study_id", type_=Integer)
    confirms = select(Study.confirms_study_id).where(Study.id == study_id).scalar_subquery()
    studies = select(
        literal("s").label("kind"), Study.id, Study.version, null().cast(UTCDateTime).label("beat")
    ).where(or_(Study.id == study_id, Study.confirms_study_id == study_id, Study.id == confirms))
    if not live:
        return studies
    running = select(literal("r"), Run.id, null().cast(BigInteger), Run.heartbeat_at).where(
        Run.study_id == study_id, Run.state == RunState.RUNNING
    )
    return union_all(studies, running)


STUDY_ROWS = {False: _study_rows(live=False), True: _study_rows(live=True)}


def study_tag(db: Database, study_id: int, kind: Kind) -> str | None:
    """The current tag of a study's answers of this kind; None if the study does not exist."""
    with db.read_connection() as connection:
        rows = sorted(
            (str(kind_), int(ref), str(version), str(beat))
            for kind_, ref, version, beat in connection.execute(
                STUDY_ROWS[kind == "live"], {"study_id": study_id}
            )
        )
    own = next((row for row in rows if row[:2] == ("s", study_id)), None)
    if own is None:
        return None
    return _tag(f"{kind}.{study_id}.{own[2]}", rows)


def studies_tag(db: Database) -> str:
    """The current tag of the study list."""
    with db.read_connection() as connection:
        count, total, newest = connection.execute(
            select(func.count(), func.coalesce(func.sum(Study.version), 0), func.max(Study.id))
        ).one()
    return _tag(f"studies.{count}", [count, total, newest])


def campaign_tag(db: Database, campaign_id: int) -> str | None:
    """The current tag of a campaign's detail; None if the campaign does not exist."""
    with db.read_connection() as connection:
        own = connection.execute(
            select(
                Campaign.status, Campaign.stage, Campaign.stage_ready, Campaign.updated_at,
                Campaign.error,
            ).where(Campaign.id == campaign_id)
        ).one_or_none()  # fmt: skip
        if own is None:
            return None
        studies = connection.execute(
            select(Study.id, Study.version).where(Study.campaign_id == campaign_id)
        ).all()
    clock = int(time.time() // WALL_CLOCK_S) if own.status == CampaignStatus.RUNNING else None
    parts = [[str(v) for v in own], sorted((int(i), int(v)) for i, v in studies), clock]
    return _tag(f"campaign.{campaign_id}", parts)


def _tag(readable: str, parts: Any) -> str:
    digest = hashlib.blake2b(repr((CODE, parts)).encode(), digest_size=10).hexdigest()
    return f'W/"{readable}.{digest}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names `tag` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    wanted = _opaque(tag)
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or _opaque(candidate) == wanted:
            return True
    return False


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


# -- answers kept per process ---------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """A 200 as the route sent it: body and content type."""

    body: bytes
    media_type: str
    kept_at: float = field(default_factory=time.monotonic)


class AnswerCache:
    """Answers by route (path and query) and tag, least recently used out first, bounded in bytes.

    A tag changes with what the answer shows, so a change never meets an old answer under the
    new tag; old ones age out. The newest answer of each route is also found without its tag
    (`newest`): what a poll gets while another request computes the current one.
    """

    def __init__(self, max_entries: int = 512, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_answer = max_bytes // 8
        self._lock = threading.Lock()
        self._answers: OrderedDict[tuple[str, str], Answer] = OrderedDict()
        self._newest: dict[str, str] = {}  # route → the tag of its answer kept last
        self._bytes = 0

    def get(self, route: str, tag: str) -> Answer | None:
        """The answer kept for `route` under `tag`, if any."""
        with self._lock:
            answer = self._answers.get((route, tag))
            if answer is not None:
                self._answers.move_to_end((route, tag))
            return answer

    def newest(self, route: str) -> tuple[str, Answer] | None:
        """The tag and answer of `route` kept last, whatever its tag."""
        with self._lock:
            tag = self._newest.get(route)
            answer = None if tag is None else self._answers.get((route, tag))
            return None if tag is None or answer is None else (tag, answer)

    def put(self, route: str, tag: str, answer: Answer) -> None:
        """Keep an answer (one larger than an eighth of the budget is not kept)."""
        if len(answer.body) > self.max_answer:
            return
        key = (route, tag)
        with self._lock:
            previous = self._answers.pop(key, None)
            if previous is not None:
                self._bytes -= len(previous.body)
            self._answers[key] = answer
            self._newest[route] = tag
            self._bytes += len(answer.body)
            while len(self._answers) > self.max_entries or self._bytes > self.max_bytes:
                (old_route, old_tag), dropped = self._answers.popitem(last=False)
                self._bytes -= len(dropped.body)
                if self._newest.get(old_route) == old_tag:
                    del self._newest[old_route]

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)


class Flights:
    """Answers being computed, by route and tag: the leader's event, set when its answer is kept
    or not.

    Used from the event loop only (dependencies and middleware are async), so no lock."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self.revalidating: set[str] = set()  # routes computed in the background (service.api.polls)

    def lead(self, key: tuple[str, str]) -> asyncio.Event | None:
        """None: this request leads (others wait for it); else the leader's event to wait on."""
        event = self._events.get(key)
        if event is None:
            self._events[key] = asyncio.Event()
        return event

    def land(self, key: tuple[str, str]) -> None:
        """The leader is done (answer kept or not): its waiters look again."""
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def __len__(self) -> int:
        return len(self._events)


def headers(tag: str) -> dict[str, str]:
    """The headers of an answer under `tag`: a 200's and a 304's."""
    return {"ETag": tag, "Cache-Control": CACHE_CONTROL}


# -- the dependencies routes declare --------------------------------------------------------------
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        max_length=IF_NONE_MATCH_MAX,
        description="the ETag of the copy you have: 304 without a body while it is current",
    ),
]


def _declares(kind: str) -> Callable[..., Any]:
    """A dependency that marks a route conditional: service.api.polls answers its polls and tags
    its 200s. It documents If-None-Match and needs the user (401 before anything else)."""

    async def conditional(_user: CurrentUser, if_none_match: IfNoneMatch = None) -> None:
        return None

    conditional.__name__ = f"conditional_{kind}"
    return conditional


STUDY = Depends(_declares("study"))  # the study's change counters
LIVE = Depends(_declares("live"))  # and its running trials' heartbeats
STUDIES = Depends(_declares("studies"))  # the study list
CAMPAIGN = Depends(_declares("campaign"))  # a campaign's detail

TAG_HEADER = {
    "ETag": {
        "description": "the answer's tag: send it as If-None-Match next time",
        "schema": {"type": "string"},
    }
}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the If-None-Match tag is current; no body"}
}
# A route's responses: its 200 carries the ETag header; 304 when the client's copy is current.
CONDITIONAL: dict[int | str, dict[str, Any]] = {200: {"headers": TAG_HEADER}, **NOT_MODIFIED}
