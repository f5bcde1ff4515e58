"""Error responses: JSON bodies naming what was wrong; 500s logged with a request id.

Every response carries `X-Request-ID` (the client's, when it sent a sane one). Errors are
`{"detail": <message or [{"loc": "a.b", "msg": ...}]>, "request_id": ...}`. A request body over
the limit (service.api.limits) is a 413 of the same shape, refused before it is read.

The database being away (service.db.outage) is a 503 with `Retry-After` on every route, so that
a client can tell an outage to wait out from a bug (500); dashboard pages get a 503 page.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search_space.spec import SpecError
from service.api.limits import BodyLimitMiddleware
from service.db.outage import describe_db_error, is_db_outage
from service.store import Conflict, NotFound
from service.store.queries import InvalidQuery

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# A client-chosen id is echoed only when it cannot smuggle anything into logs or headers.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
RETRY_AFTER_S = 5  # what a 503 asks clients to wait before they try again
JSON_PREFIXES = ("/api/", "/dashboard/")  # everything else is a dashboard page (HTML)
OUTAGE_PAGE = "unavailable.html"  # in the dashboard's templates


def request_id_of(request: Request) -> str:
    """The id of the request being served (set by RequestIdMiddleware)."""
    return str(request.scope.get("request_id") or "-")


def error_body(detail: Any, request_id: str) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"detail": detail, "request_id": request_id}


def _incoming_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_ID.match(candidate):
                return candidate
    return _new_id()


# A random 64-bit prefix per process and a counter: as unique as uuid4 across processes and
# restarts, without a system call for random bytes on every request.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class RequestIdMiddleware:
    """Tags each request with an id, returns it as X-Request-ID, and turns crashes into 500s.

    Catching here (innermost of the user middleware, outside the routes) means a 500 carries the
    same header and body shape as every other error, and the traceback goes only to our log. A
    database outage, whichever route met it, is a 503 with Retry-After instead.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope)
        scope["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            where = (request_id, scope.get("method"), scope.get("path"))
            outage = is_db_outage(error)
            if outage:  # expected while the database is away: one line, no traceback
                log.warning(
                    "request %s %s %s: database unreachable (%s)", *where, describe_db_error(error)
                )
            else:
                log.exception("request %s %s %s failed", *where)
            if started:
                raise  # the client already has a status line; nothing better to send
            status, headers, body = (
                _unavailable(scope, request_id) if outage else _internal_error(request_id)
            )
            await send_with_id(
                {"type": "http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})


Headers = list[tuple[bytes, bytes]]


def _internal_error(request_id: str) -> tuple[int, Headers, bytes]:
    detail = f"internal error; quote request id {request_id} when reporting it"
    body = json.dumps(error_body(detail, request_id)).encode()
    return 500, [(b"content-type", b"application/json")], body


def outage_detail() -> str:
    """What a 503 says: the database is away, and when to try again."""
    return f"the database is unreachable (a temporary outage); retry in {RETRY_AFTER_S} s"


def _unavailable(scope: Scope, request_id: str) -> tuple[int, Headers, bytes]:
    """The 503 of a database outage: JSON for the API and data routes, a page for a browser."""
    headers = [(b"retry-after", str(RETRY_AFTER_S).encode()), (b"cache-control", b"no-store")]
    path = str(scope.get("path") or "")
    page = None if path.startswith(JSON_PREFIXES) else _outage_page(scope)
    if page is not None:
        return 503, [(b"content-type", b"text/html; charset=utf-8"), *headers], page.encode()
    body = json.dumps(error_body(outage_detail(), request_id)).encode()
    return 503, [(b"content-type", b"application/json"), *headers], body


def _outage_page(scope: Scope) -> str | None:
    """The dashboard's 503 page, rendered without the database (None: no dashboard here)."""
    app = scope.get("app")
    templates = getattr(getattr(app, "state", None), "dashboard_templates", None)
    if templates is None:
        return None
    template = templates.env.get_template(OUTAGE_PAGE)
    return str(
        template.render(user=None, modules=(), message=outage_detail(), retry_s=RETRY_AFTER_S)
    )


def _loc(parts: Sequence[Any]) -> str:
    return ".".join(str(part) for part in parts)


def validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """FastAPI/pydantic errors as [{loc: "query.limit", msg}] without echoing the input back."""
    return [
        {"loc": _loc(error.get("loc", ())), "msg": str(error.get("msg", ""))} for error in errors
    ]


def spec_errors(error: SpecError) -> list[dict[str, str]]:
    """A SpecError's field errors, each naming the spec field as a dotted path."""
    items = getattr(error, "errors", None) or [{"loc": "", "msg": str(error)}]
    out = []
    for item in items:
        loc = item.get("loc", "")
        if not isinstance(loc, str):
            loc = _loc(loc)
        out.append({"loc": loc, "msg": str(item.get("msg", ""))})
    return out


def _json(
    request: Request, status: int, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(detail, request_id_of(request)), status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.detail is not None else "error"
    return _json(request, exc.status_code, detail, dict(exc.headers or {}))


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _json(request, 422, validation_errors(exc.errors()))


async def _spec_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return _json(request, 422, spec_errors(exc))


async def _query_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidQuery)
    return _json(request, 422, [{"loc": exc.loc, "msg": exc.msg}])


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return _json(request, 404, str(exc))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return _json(request, 409, str(exc))


def install(app: FastAPI) -> None:
    """Register the exception handlers and the middleware: request ids, the body limit."""
    # Added first, so inside RequestIdMiddleware: its 413s carry the request id too.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(SpecError, _spec_invalid)
    app.add_exception_handler(InvalidQuery, _query_invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
