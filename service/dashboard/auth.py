"""Dashboard sign-in: a token becomes the signed `actsearch_session` cookie; pages need it."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from service.api.deps import SESSION_COOKIE
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


def session_user(request: Request) -> UserInfo | None:
    """The user of a genuine session cookie whose token is still live, else None."""
    token = request.app.state.sessions.token_from_cookie(request.cookies.get(SESSION_COOKIE))
    return request.app.state.store.users.authenticate(token) if token else None


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


def signed_in(request: Request, token: str, next_path: str | None) -> Response:
    """Redirect to `next_path` carrying the session cookie for a verified `token`."""
    response = RedirectResponse(safe_next(next_path), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        request.app.state.sessions.cookie_for(token),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def signed_out() -> Response:
    """Redirect to the login form, dropping the session cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response
