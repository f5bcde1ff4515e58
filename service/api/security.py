"""What a browser must prove before the session cookie may change anything; headers on every answer.

The dashboard's session cookie is `SameSite=Lax`: a page on another port of the same host, or on
another subdomain of the team's domain, is the same *site*, and its forms and fetches carry the
cookie. So an unsafe request authenticated by that cookie (not by a bearer token) must show that
it comes from the dashboard's own pages (docs/security.md):

1. the browser says it is same-origin: `Sec-Fetch-Site: same-origin`, or, from a browser that
   sends no fetch metadata, an `Origin` naming this server (the Host the browser used; behind a
   reverse proxy, its `X-Forwarded-Host` / `Forwarded: host=` only with ACTSEARCH_TRUST_PROXY);
2. and the page sends the session's CSRF token (`X-CSRF-Token`, from the page's
   `<meta name="csrf-token">`), which no other origin can read.

Bearer-token requests (CLI, scripts) carry no ambient authority and are never checked.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_HEADER = "X-CSRF-Token"
DEFAULT_PORTS = {"http": "80", "https": "443"}
FETCH_SITES = {  # what a Sec-Fetch-Site other than same-origin means
    "same-site": "another origin of the same site (another port or subdomain)",
    "cross-site": "another site",
    "none": "no page (typed or opened from outside)",
}

# Only the server's own scripts, styles, fetches and forms; no inline script or style (the
# dashboard's charts build their tooltips as DOM, never as HTML with style="…" attributes); the
# favicon is a data: URL; nothing may frame a page.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),  # frame-ancestors for browsers that predate it
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)


class SecurityHeadersMiddleware:
    """Adds the security headers to every response (a route's own value wins); HTML pages, which
    may carry a token (the login pages, every page's CSRF token), are never stored by caches."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- where a request came from ------------------------------------------------------------------
def _first(value: str | None) -> str:
    """The first of a comma-separated header's values (the one the client-side proxy added)."""
    return (value or "").split(",", 1)[0].strip()


def _forwarded(request: Request) -> dict[str, str]:
    """The first element of an RFC 7239 `Forwarded` header as {name: value}."""
    pairs = {}
    for part in _first(request.headers.get("forwarded")).split(";"):
        name, equals, value = part.partition("=")
        if equals:
            pairs[name.strip().lower()] = value.strip().strip('"')
    return pairs


def _trusts_proxy(request: Request) -> bool:
    return bool(getattr(request.app.state.settings, "trust_proxy", False))


def browser_host(request: Request) -> str:
    """The host[:port] the browser used: Host, or a trusted proxy's forwarded host."""
    if _trusts_proxy(request):
        forwarded = _forwarded(request).get("host") or _first(
            request.headers.get("x-forwarded-host")
        )
        if forwarded:
            return forwarded.lower()
    return request.headers.get("host", "").lower()


def browser_scheme(request: Request) -> str:
    """http or https as the browser sees it: a trusted proxy's forwarded proto, else our own."""
    if _trusts_proxy(request):
        forwarded = _forwarded(request).get("proto") or _first(
            request.headers.get("x-forwarded-proto")
        )
        if forwarded:
            return forwarded.lower()
    return request.url.scheme


def _without_default_port(host: str, scheme: str) -> str:
    default = DEFAULT_PORTS.get(scheme)
    return host[: -len(default) - 1] if default and host.endswith(f":{default}") else host


def _origin_is_this_server(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc or not host:
        return False
    ours = _without_default_port(host, parts.scheme)
    return _without_default_port(parts.netloc.lower(), parts.scheme) == ours


def cross_origin_reason(request: Request) -> str | None:
    """Why the request may not come from this server's own pages; None if it does.

    `Sec-Fetch-Site` decides when the browser sends it (it is computed from the very URL the
    browser requested, so a proxy cannot confuse it); otherwise the `Origin` must be this server.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site == "same-origin":
            return None
        where = FETCH_SITES.get(site, "elsewhere")
        return f"the browser says it came from {where} (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is None:
        return "it says neither where it came from (no Origin or Sec-Fetch-Site header)"
    host = browser_host(request)
    if _origin_is_this_server(origin, host):
        return None
    return (
        f"its Origin {origin} is not this server ({host or 'no Host header'}); behind a reverse "
        "proxy that rewrites Host, have the proxy pass the browser's Host or set "
        "ACTSEARCH_TRUST_PROXY=true"
    )


def _csrf_reason(request: Request, session_token: str) -> str | None:
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        return f"it does not send the session's CSRF token ({CSRF_HEADER} header)"
    expected = request.app.state.sessions.csrf_token(session_token)
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        return f"its {CSRF_HEADER} is not this session's (signed in again since? reload the page)"
    return None


def require_same_origin_intent(request: Request, session_token: str) -> None:
    """403 unless an unsafe request authenticated by the session cookie comes from our pages."""
    if request.method in SAFE_METHODS:
        return
    why = cross_origin_reason(request) or _csrf_reason(request, session_token)
    if why is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"refused a change made with the dashboard's session cookie: {why}. Only the "
            "dashboard's own pages may use the cookie for changes; scripts and the CLI send "
            "`Authorization: Bearer <token>`",
        )
