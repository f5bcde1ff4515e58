"""The request body limit: no request body past MAX_BODY_BYTES is read into memory.

A limit checked on the whole body comes too late: the body is in memory by then (a 400 MB POST
grew the server by 700 MB), and FastAPI reads a route's JSON body before its dependencies run,
so even an unauthenticated request was read in full. The middleware refuses a body at once
when its Content-Length is over the limit, and stops a streamed (chunked) one as soon as it
passes the limit, whatever the route and before any of it is parsed.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.schemas import ErrorOut

# The largest request body: a study spec (POST /studies, a clone's changes) is the largest thing
# a client sends, and the largest real one is a few kilobytes.
MAX_BODY_BYTES = 1_000_000


def too_large_message(limit: int) -> str:
    """What a 413 says: the limit and the request it bounds."""
    return f"the request body is over {limit} bytes, the most a request (a study spec included) may send"


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before we see it
    return None


class BodyLimitMiddleware:
    """413 for a request body over `max_bytes`, read no further than the limit.

    Declared too long (Content-Length): answered at once, the app never called, the connection
    closed (so the server does not read the rest). Streamed: the read that passes the limit
    raises HTTPException(413), which the route's exception handler answers like any other.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(
                        413, too_large_message(self.max_bytes), headers={"Connection": "close"}
                    )
            return message

        await self.app(scope, receive_within_limit, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        request_id = str(scope.get("request_id") or "-")
        body = ErrorOut(detail=too_large_message(self.max_bytes), request_id=request_id)
        content = body.model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
