"""Request dependencies: the store, the signed-in user, ownership checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from service.api.security import require_same_origin_intent
from service.store import Store, StudyInfo, UserInfo

SESSION_COOKIE = "actsearch_session"
USER_KEY = "user"  # request.state: the user service.api.polls already found for this request
bearer = HTTPBearer(auto_error=False, description="a token from `actsearch users create`")


async def get_store(request: Request) -> Store:
    """The app's store (built by create_app). Async: a plain function would cost a thread hop."""
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]


async def current_user(
    request: Request,
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> UserInfo:
    """The user behind the bearer token or the dashboard's session cookie; 401 otherwise.

    A change made with the cookie must come from the dashboard's own pages (403 otherwise):
    another page of the same site gets the cookie too (service.api.security).
    """
    found: UserInfo | None = getattr(request.state, USER_KEY, None)
    if found is not None:  # a poll's token, checked by service.api.polls for this very request
        return found
    token = credentials.credentials if credentials else None
    if token is None:
        token = request.app.state.sessions.token_from_cookie(request.cookies.get(SESSION_COOKIE))
        if token is not None:
            require_same_origin_intent(request, token)
    user = await run_in_threadpool(store.users.authenticate, token) if token else None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid token: send `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


CurrentUser = Annotated[UserInfo, Depends(current_user)]


def require_admin(user: CurrentUser) -> UserInfo:
    """403 unless the user is an admin."""
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this needs an admin")
    return user


AdminUser = Annotated[UserInfo, Depends(require_admin)]


def check_owner(user: UserInfo, study: StudyInfo) -> None:
    """403 unless the user owns the study or is an admin (everyone may read)."""
    if not (user.is_admin or study.owner_id == user.id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"study {study.id} belongs to {study.owner}; only its owner or an admin may change it",
        )
