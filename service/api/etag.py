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

When a change makes an answer miss, the first request computes it and the others asking for the
same key meanwhile wait for it (`Flights`: one flight per key and process) instead of computing
the same leaderboard side by side. They wait in the event loop, holding no request thread (the
route the leader runs needs one), for `FLIGHT_WAIT_S` at most; a leader without an answer (an
error, a 404) lets them compute their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Header, Request, Response
from sqlalchemy import BigInteger, Integer, bindparam, func, literal, null, or_, select, union_all
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import CurrentUser
from service.db import Campaign, CampaignStatus, Run, RunState, Study
from service.db.types import UTCDateTime
from service.store import Database

Kind = Literal["study", "live", "studies"]
WALL_CLOCK_S = 30  # a running campaign's tag changes at least this often
CACHE_CONTROL = "private, no-cache"  # store it, but ask again (If-None-Match) before using it
STATE_KEY = "answer_cache_key"  # request.state: where the capture middleware files the answer
FLIGHT_KEY = "answer_flight"  # request.state: the key this request leads the flight of
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


class AnswerCache:
    """Answers by (path, query, tag), least recently used out first, bounded in bytes.

    A key names the tag it was built under, so a change (a new tag) never meets an old answer;
    old keys just age out.
    """

    def __init__(self, max_entries: int = 512, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_answer = max_bytes // 8
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, Answer] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> Answer | None:
        """The answer kept under key, if any."""
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
            return answer

    def put(self, key: str, answer: Answer) -> None:
        """Keep an answer (one larger than an eighth of the budget is not kept)."""
        if len(answer.body) > self.max_answer:
            return
        with self._lock:
            previous = self._answers.pop(key, None)
            if previous is not None:
                self._bytes -= len(previous.body)
            self._answers[key] = answer
            self._bytes += len(answer.body)
            while len(self._answers) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._answers.popitem(last=False)
                self._bytes -= len(dropped.body)

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)


class Flights:
    """Answers being computed, by key: the leader's event, set when its answer is kept or not.

    Used from the event loop only (dependencies and middleware are async), so no lock."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def lead(self, key: str) -> asyncio.Event | None:
        """None: this request leads (others wait for it); else the leader's event to wait on."""
        event = self._events.get(key)
        if event is None:
            self._events[key] = asyncio.Event()
        return event

    def land(self, key: str) -> None:
        """The leader is done (answer kept or not): its waiters look again."""
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def __len__(self) -> int:
        return len(self._events)


class NotModified(Exception):
    """The client's copy is current: 304."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.tag = tag


class Kept(Exception):
    """An answer kept under the current tag: sent as it is, the route not run."""

    def __init__(self, tag: str, answer: Answer) -> None:
        super().__init__(tag)
        self.tag = tag
        self.answer = answer


def _headers(tag: str) -> dict[str, str]:
    return {"ETag": tag, "Cache-Control": CACHE_CONTROL}


async def _not_modified(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotModified)
    return Response(status_code=304, headers=_headers(exc.tag))


async def _kept(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Kept)
    return Response(exc.answer.body, media_type=exc.answer.media_type, headers=_headers(exc.tag))


class KeepAnswersMiddleware:
    """Files the 200 of a conditional route under the key its dependency chose (request.state)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        media_type = ""

        async def send_and_keep(message: Message) -> None:
            nonlocal media_type
            await send(message)
            key = scope.get("state", {}).get(STATE_KEY)
            if key is None:
                return
            if message["type"] == "http.response.start":
                if message["status"] != 200:
                    scope["state"][STATE_KEY] = None
                    return
                for name, value in message.get("headers", []):
                    if name == b"content-type":
                        media_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    cache: AnswerCache = scope["app"].state.answers
                    cache.put(key, Answer(b"".join(parts), media_type))

        try:
            await self.app(scope, receive, send_and_keep)
        finally:
            flight = scope.get("state", {}).get(FLIGHT_KEY)
            if flight is not None:
                scope["app"].state.flights.land(flight)


# -- the dependency routes declare ----------------------------------------------------------------
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        max_length=2000,
        description="the ETag of the copy you have: 304 without a body while it is current",
    ),
]


def _answer_key(request: Request, tag: str) -> str:
    return f"{request.url.path}?{request.url.query}#{tag}"


async def _conditional(
    request: Request, response: Response, tag: str, if_none_match: str | None
) -> None:
    if matches(if_none_match, tag):
        raise NotModified(tag)
    key = _answer_key(request, tag)
    cache: AnswerCache = request.app.state.answers
    kept = cache.get(key) or await _wait_or_lead(request, key)
    if kept is not None:
        raise Kept(tag, kept)
    response.headers.update(_headers(tag))
    request.state.answer_cache_key = key


async def _wait_or_lead(request: Request, key: str) -> Answer | None:
    """Another request's answer for `key`, or None: this request computes it (leading the
    flight unless the wait ran out). A leader that lands without an answer hands the lead to
    the next waiter, so a failure does not set every waiter computing at once."""
    flights: Flights = request.app.state.flights
    cache: AnswerCache = request.app.state.answers
    deadline = anyio.current_time() + FLIGHT_WAIT_S
    while True:
        leader = flights.lead(key)
        if leader is None:
            request.state.answer_flight = key  # the middleware lands it, answer or not
            return None
        with anyio.move_on_after(deadline - anyio.current_time()):
            await leader.wait()
        kept = cache.get(key)
        if kept is not None or anyio.current_time() >= deadline:
            return kept  # None: the leader was slow; compute it without leading


def _study_id(request: Request) -> int | None:
    """The path's study id, or None when it is not one (the route's validation answers)."""
    try:
        study_id = int(request.path_params.get("study_id", ""))
    except ValueError:
        return None
    return study_id if 1 <= study_id <= 2**31 - 1 else None


def for_study(kind: Literal["study", "live"]) -> Callable[..., Any]:
    """A dependency: 304 or a kept answer for the path's study, else the ETag on the answer."""

    async def check(
        request: Request, response: Response, _user: CurrentUser, if_none_match: IfNoneMatch = None
    ) -> None:
        study_id = _study_id(request)
        if study_id is None:
            return
        tag = await run_in_threadpool(study_tag, request.app.state.store.db, study_id, kind)
        if tag is not None:  # else the route answers 404
            await _conditional(request, response, tag, if_none_match)

    return check


async def for_campaign(
    request: Request, response: Response, _user: CurrentUser, if_none_match: IfNoneMatch = None
) -> None:
    """The dependency of a campaign's detail: 304 or a kept answer, else the ETag."""
    try:
        campaign_id = int(request.path_params.get("campaign_id", ""))
    except ValueError:
        return
    if not 1 <= campaign_id <= 2**31 - 1:
        return  # the route's validation answers
    tag = await run_in_threadpool(campaign_tag, request.app.state.store.db, campaign_id)
    if tag is not None:  # else the route answers 404
        await _conditional(request, response, tag, if_none_match)


async def for_studies(
    request: Request, response: Response, _user: CurrentUser, if_none_match: IfNoneMatch = None
) -> None:
    """The dependency of the study list."""
    tag = await run_in_threadpool(studies_tag, request.app.state.store.db)
    await _conditional(request, response, tag, if_none_match)


STUDY = Depends(for_study("study"))
LIVE = Depends(for_study("live"))
STUDIES = Depends(for_studies)
CAMPAIGN = Depends(for_campaign)

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


def install(app: FastAPI) -> None:
    """The answer cache, its middleware (innermost: before any other is added) and handlers."""
    app.state.answers = AnswerCache()
    app.state.flights = Flights()
    app.add_middleware(KeepAnswersMiddleware)
    app.add_exception_handler(NotModified, _not_modified)
    app.add_exception_handler(Kept, _kept)
