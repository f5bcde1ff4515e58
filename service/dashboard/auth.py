"""Dashboard sign-in: a token becomes the signed `actsearch_session` cookie; pages need it.

The cookie is HttpOnly and SameSite=Lax, and Secure when the browser reached us over https (or
ACTSEARCH_SECURE_COOKIES says so). Pages carry the session's CSRF token for their scripts.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from service.api.deps import SESSION_COOKIE
from service.api.security import browser_scheme
from service.store import UserInfo

SESSION_MAX_AGE_S = 14 * 24 * 3600  # the token itself stays the authority: revoking it signs out


class LoginRequired(Exception):
    """A page was asked for without a valid session; the handler redirects to /login."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def safe_next(target: str | None) -> str:
    """Only same-site paths may follow a login (no open redirect to another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def session_token(request: Request) -> str | None:
    """The token inside a genuine session cookie (live or not), else None."""
    return request.app.state.sessions.token_from_cookie(request.cookies.get(SESSION_COOKIE))


def session_user(request: Request) -> UserInfo | None:
    """The user of a genuine session cookie whose token is still live, else None."""
    token = session_token(request)
    return request.app.state.store.users.authenticate(token) if token else None


def csrf_token(request: Request) -> str | None:
    """The CSRF token of the browser's session (for the page's <meta>), None when signed out."""
    token = session_token(request)
    return request.app.state.sessions.csrf_token(token) if token else None


def page_user(request: Request) -> UserInfo:
    """The signed-in user of a page request; LoginRequired (→ redirect) otherwise."""
    user = session_user(request)
    if user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return user


PageUser = Annotated[UserInfo, Depends(page_user)]


def redirect_to_login(request: Request, exc: Exception) -> Response:
    """Exception handler: send the browser to the login form, remembering where it was going."""
    assert isinstance(exc, LoginRequired)
    target = "/login" if exc.next_path == "/" else f"/login?next={quote(exc.next_path, safe='/')}"
    return RedirectResponse(target, status_code=303)


def _secure(request: Request) -> bool:
    """Whether the cookie gets `Secure`: the browser uses https, or the settings say it does."""
    return browser_scheme(request) == "https" or bool(request.app.state.settings.secure_cookies)


def signed_in(request: Request, token: str, next_path: str | None) -> Response:
    """Redirect to `next_path` carrying the session cookie for a verified `token`."""
    response = RedirectResponse(safe_next(next_path), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        request.app.state.sessions.cookie_for(token),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.headers["Cache-Control"] = "no-store"  # it answers a URL holding a token
    return response


def signed_out(request: Request) -> Response:
    """Redirect to the login form, dropping the session cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request)
    )
    return response
