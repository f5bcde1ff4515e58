"""A poll answered before FastAPI routes it: the token, the tag, then 304 or the kept answer.

The routes a dashboard or `--follow` polls (those declaring one of service.api.etag's
dependencies) are mostly asked for something the client already has (304) or another client
just got (a kept answer). Both need only the token check and the tag's one read, but walking
FastAPI's dependency solving, its thread hops and its exception handlers for them cost more than
the two reads themselves, and under 50 polling dashboards the server ran out of CPU there
(bench/results/api_latency-notes.md). So this middleware, the innermost (the request id, the
security headers and the outage answers still wrap it), finds the route as the router would
(from the routers included through `include_router`), checks the token and reads the tag in
one trip to a request thread, and answers those two cases itself. Everything else goes on to
the route unchanged: no token, a token that is not valid (the route answers 401), a study that
does not exist (404), an id that is not one (422).

A request that goes on carries what was learned (request.state): the user, so the route does
not check the token again, and the route and tag its 200 is kept under; the ETag and
Cache-Control are added to that 200 here. Requests that miss one answer at once do not all
compute it (etag.Flights): one does, the others wait for its answer.

A request may say it accepts an older answer (`Cache-Control: max-stale=N`, RFC 9111; the
dashboard's and `--follow`'s repeat polls send it): after a change it then gets the route's
newest kept answer at once, if that was computed at most N seconds ago, and the current one is
computed in the background for the next poll (stale-while-revalidate). A client holding a copy
gets the older answer only when it is that copy (a 304): tags do not say which of two answers
is newer, and a poll must never go back in time. Without the directive a read after a change
gets the current answer, so a client always reads its own changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import etag
from service.api.deps import SESSION_COOKIE, USER_KEY
from service.store import Store, UserInfo

STATE_KEY = "answer_route"  # request.state: the route (path?query) this request's 200 is kept for
TAG_KEY = "answer_tag"  # request.state: the tag that 200 is sent with
UNCHANGED_KEY = "answer_unchanged"  # request.state: the client has that tag: a 304 goes out
FLIGHT_KEY = "answer_flight"  # request.state: the (route, tag) this request leads the flight of
MAX_ID = 2**31 - 1
_REVALIDATING: set[asyncio.Task[None]] = set()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Poll:
    """What a request polls: a tag kind and the id it is read for (0: the study list)."""

    kind: str
    ref: int


def _marker_kinds() -> dict[Callable[..., Any], str]:
    return {
        etag.STUDY.dependency: "study",
        etag.LIVE.dependency: "live",
        etag.STUDIES.dependency: "studies",
        etag.CAMPAIGN.dependency: "campaign",
    }


def _kind_of(route: APIRoute, kinds: dict[Callable[..., Any], str]) -> str | None:
    for dependency in route.dependencies:
        kind = kinds.get(dependency.dependency)  # type: ignore[arg-type]
        if kind is not None:
            return kind
    return None


def _ref(kind: str, path_params: dict[str, str]) -> int | None:
    """The polled id (the list: 0); None when the path's id is not one (the route's
    validation answers)."""
    if kind == "studies":
        return 0
    raw = path_params.get("campaign_id" if kind == "campaign" else "study_id", "")
    try:
        ref = int(raw)
    except ValueError:
        return None
    return ref if 1 <= ref <= MAX_ID else None


class PollTable:
    """The GET routes of the routers included with `include_router`, in the router's order, each
    with its poll kind (None: not conditional). Built from the routers' own public route lists
    (APIRouter.routes), not from the app's router, whose inner structure differs between
    FastAPI versions."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], str | None]] = []

    def add(self, router: APIRouter, prefix: str) -> None:
        """Every GET route of `router`, mounted under `prefix`."""
        kinds = _marker_kinds()
        for route in router.routes:
            if isinstance(route, APIRoute) and "GET" in (route.methods or ()):
                regex, _, _ = compile_path(prefix + route.path)
                self._routes.append((regex, _kind_of(route, kinds)))

    def find(self, path: str) -> Poll | None:
        """The poll a GET of `path` asks for, found as the router finds its route (the first
        match); None for any other route."""
        for regex, kind in self._routes:
            found = regex.match(path)
            if found is None:
                continue
            ref = None if kind is None else _ref(kind, found.groupdict())
            return None if kind is None or ref is None else Poll(kind, ref)
        return None


def include_router(app: FastAPI, router: APIRouter, prefix: str = "") -> None:
    """`app.include_router`, and its conditional routes answered by this module's middleware."""
    app.include_router(router, prefix=prefix)
    app.state.polls.add(router, prefix)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


# -- who asks ----------------------------------------------------------------------------------
def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def token_of(scope: Scope, app: Any) -> str | None:
    """The bearer token (as fastapi.security.HTTPBearer reads it), else the session cookie's."""
    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return credentials
    cookie = _header(scope, b"cookie")
    if not cookie:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie)
    except Exception:  # a malformed Cookie header: the route's own parsing answers
        return None
    morsel = jar.get(SESSION_COOKIE)
    return app.state.sessions.token_from_cookie(morsel.value if morsel else None)


def _tag(store: Store, poll: Poll) -> str | None:
    if poll.kind == "studies":
        return etag.studies_tag(store.db)
    if poll.kind == "campaign":
        return etag.campaign_tag(store.db, poll.ref)
    return etag.study_tag(store.db, poll.ref, poll.kind)  # type: ignore[arg-type]


def check(store: Store, token: str, poll: Poll) -> tuple[UserInfo | None, str | None]:
    """The token's user and, for a user, the poll's current tag (None: no such study).

    One trip to a request thread; the token is checked first, so nothing about a study is read
    for a caller without a valid token."""
    user = store.users.authenticate(token)
    if user is None:
        return None, None
    return user, _tag(store, poll)


# -- the middleware ----------------------------------------------------------------------------
class ConditionalMiddleware:
    """Answers polls of an unchanged (304) or already computed (kept) answer; keeps the 200s."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            if await self._answered(scope, state, send):
                return
            await self.app(scope, receive, self._keeping(scope, state, send))
        finally:
            flight = state.get(FLIGHT_KEY)
            if flight is not None:
                scope["app"].state.flights.land(flight)

    async def _answered(self, scope: Scope, state: dict[str, Any], send: Send) -> bool:
        """True when the poll was answered here; else the state says what the route needs."""
        app = scope["app"]
        poll = app.state.polls.find(_route_path(scope))
        token = token_of(scope, app) if poll is not None else None
        if poll is None or token is None:
            return False
        user, tag = await run_in_threadpool(check, app.state.store, token, poll)
        if user is None:
            return False  # the route answers 401
        state[USER_KEY] = user
        if tag is None:
            return False  # the route answers 404
        if_none_match = _header(scope, b"if-none-match")
        if if_none_match is not None and len(if_none_match) > etag.IF_NONE_MATCH_MAX:
            return False  # the route's validation answers 422
        route = f"{scope['path']}?{scope.get('query_string', b'').decode('latin-1')}"
        unchanged = etag.matches(if_none_match, tag)
        # A 304 here only for a query the route has answered before (so it is a valid one):
        # otherwise the route validates it, and its 200 goes out as a 304 (_keeping).
        if unchanged and app.state.answers.newest(route) is not None:
            await _send(scope, send, tag, None)
            return True
        kept = app.state.answers.get(route, tag)
        older = None if kept is not None else _stale_allowed(scope, app.state.answers, route)
        if older is not None:
            self._revalidate(scope, user, route, tag)
            tag, kept = older
        elif kept is None:
            tag, kept = await _wait_or_lead(app, scope, state, route, tag)
        if kept is not None:
            await _send(scope, send, tag, None if etag.matches(if_none_match, tag) else kept)
            return True
        state[STATE_KEY], state[TAG_KEY], state[UNCHANGED_KEY] = route, tag, unchanged
        return False

    def _revalidate(self, scope: Scope, user: UserInfo, route: str, tag: str) -> None:
        """Compute the answer under `tag` in the background (unless a request already does),
        as the route would for this request, and keep it."""
        flights: etag.Flights = scope["app"].state.flights
        if route in flights.revalidating or flights.lead((route, tag)) is not None:
            return  # computing already: one at a time per route, however fast it changes
        flights.revalidating.add(route)
        state = {USER_KEY: user, STATE_KEY: route, TAG_KEY: tag, FLIGHT_KEY: (route, tag)}
        task = asyncio.create_task(self._compute({**scope, "state": state}, state))
        _REVALIDATING.add(task)  # a task nothing refers to may be collected before it ends
        task.add_done_callback(_REVALIDATING.discard)

    async def _compute(self, scope: Scope, state: dict[str, Any]) -> None:
        async def nowhere(_message: Message) -> None:
            return None

        try:
            await self.app(scope, _no_body, self._keeping(scope, state, nowhere))
        except Exception:  # nobody waits for this answer: the next poll asks again
            log.exception("computing %s in the background failed", state[STATE_KEY])
        finally:
            flights: etag.Flights = scope["app"].state.flights
            flights.revalidating.discard(state[STATE_KEY])
            flights.land(state[FLIGHT_KEY])

    @staticmethod
    def _keeping(scope: Scope, state: dict[str, Any], send: Send) -> Send:
        """`send`, adding the tag to the 200 of a request that computes a kept answer and
        keeping its body; a 304 instead when the client already has that tag."""
        route = state.get(STATE_KEY)
        if route is None:
            return send
        tag = state[TAG_KEY]
        parts: list[bytes] = []
        media_type = ""
        ok = False

        async def send_and_keep(message: Message) -> None:
            nonlocal media_type, ok
            if message["type"] == "http.response.start":
                ok = message["status"] == 200
                if ok:
                    headers = list(message.get("headers", []))
                    media_type = _content_type(headers)
                    tagged = [
                        (k.lower().encode(), v.encode()) for k, v in etag.headers(tag).items()
                    ]
                    if state.get(UNCHANGED_KEY):
                        message = {**message, "status": 304, "headers": tagged}
                    else:
                        message = {**message, "headers": headers + tagged}
            elif message["type"] == "http.response.body" and ok:
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answer = etag.Answer(b"".join(parts), media_type)
                    scope["app"].state.answers.put(route, tag, answer)
                if state.get(UNCHANGED_KEY):
                    message = {**message, "body": b""}  # a 304 has none
            await send(message)

        return send_and_keep


def _content_type(headers: list[tuple[bytes, bytes]]) -> str:
    return next((v.decode("latin-1") for k, v in headers if k == b"content-type"), "")


async def _no_body() -> Message:  # a GET's body is never read here
    return {"type": "http.request", "body": b"", "more_body": False}


def max_stale(cache_control: str | None) -> float | None:
    """A request's `Cache-Control: max-stale[=seconds]` (RFC 9111): how old an answer it
    accepts (no value: any age); None when it asks for none."""
    for directive in (cache_control or "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.strip().lower() != "max-stale":
            continue
        try:
            return float(value.strip().strip('"')) if value.strip() else math.inf
        except ValueError:
            return None  # malformed: as if not asked
    return None


def _stale_allowed(
    scope: Scope, answers: etag.AnswerCache, route: str
) -> tuple[str, etag.Answer] | None:
    """The route's older answer, where the request accepts one that old (max-stale)."""
    accepted = max_stale(_header(scope, b"cache-control"))
    if accepted is None:
        return None
    older = answers.newest(route)
    if older is None or time.monotonic() - older[1].kept_at > accepted:
        return None
    held = _header(scope, b"if-none-match")
    # A client holding a copy gets the older answer only if it is that copy (a 304): tags say
    # nothing of which of two is newer, and a poll must never go back in time.
    return older if held is None or etag.matches(held, older[0]) else None


async def _send(scope: Scope, send: Send, tag: str, answer: etag.Answer | None) -> None:
    """A kept answer under `tag`, or (None) a 304."""
    if answer is None:
        response = Response(status_code=304, headers=etag.headers(tag))
    else:
        response = Response(answer.body, media_type=answer.media_type, headers=etag.headers(tag))
    await response(scope, _no_body, send)


async def _wait_or_lead(
    app: Any, scope: Scope, state: dict[str, Any], route: str, tag: str
) -> tuple[str, etag.Answer | None]:
    """While another request computes the answer under `tag`: the route's older answer with its
    own tag, or (none kept) the leader's answer once it lands. (tag, None): this request
    computes it, leading the flight unless the wait ran out. A leader that lands without an
    answer hands the lead to the next waiter, so a failure does not set all of them computing."""
    flights: etag.Flights = app.state.flights
    answers: etag.AnswerCache = app.state.answers
    deadline = anyio.current_time() + etag.FLIGHT_WAIT_S
    while True:
        leader = flights.lead((route, tag))
        if leader is None:
            state[FLIGHT_KEY] = (route, tag)  # the middleware lands it, answer or not
            return tag, None
        older = _stale_allowed(scope, answers, route)  # only for a poll that accepts one
        if older is not None:
            return older
        with anyio.move_on_after(deadline - anyio.current_time()):
            await leader.wait()
        kept = answers.get(route, tag)
        if kept is not None or anyio.current_time() >= deadline:
            return tag, kept  # None: the leader was slow; compute it without leading


def install(app: FastAPI) -> None:
    """The answer cache, the flights and this middleware: installed before any other
    middleware, so the innermost (request ids, security headers and outage answers wrap it)."""
    app.state.answers = etag.AnswerCache()
    app.state.flights = etag.Flights()
    app.state.polls = PollTable()  # filled by include_router
    app.add_middleware(ConditionalMiddleware)
