"""Users and tokens (admin only, except reading yourself and revoking your own tokens)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status

from service.api.deps import AdminUser, CurrentUser, StoreDep
from service.api.schemas import (
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserCreated,
    UserPublic,
    error_responses,
)
from service.store import UserInfo

router = APIRouter(tags=["users"])

UserId = Annotated[int, Path(ge=1, le=2**31 - 1, description="user id")]
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1, description="token id")]


@router.get("/me", response_model=UserPublic, responses=error_responses(401))
def me(user: CurrentUser) -> UserPublic:
    """The user behind this request's token."""
    return UserPublic.model_validate(user)


@router.get("/users", response_model=list[UserPublic], responses=error_responses(401, 403))
def list_users(store: StoreDep, _admin: AdminUser) -> list[UserPublic]:
    """Every user (admin only)."""
    return [UserPublic.model_validate(u) for u in store.users.list()]


@router.post(
    "/users",
    response_model=UserCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 409, 422),
)
def create_user(body: UserCreate, store: StoreDep, _admin: AdminUser) -> UserCreated:
    """Create a user with a first token, shown this once (admin only)."""
    user, token = store.users.create(body.name, is_admin=body.is_admin)
    return UserCreated(user=UserPublic.model_validate(user), token=token)


def _self_or_admin(user: UserInfo, user_id: int) -> None:
    if not (user.is_admin or user.id == user_id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only an admin or the user themself may do this"
        )


@router.get(
    "/users/{user_id}/tokens",
    response_model=list[TokenPublic],
    responses=error_responses(401, 403, 404, 422),
)
def list_tokens(user_id: UserId, store: StoreDep, user: CurrentUser) -> list[TokenPublic]:
    """A user's tokens, metadata only (admin, or the user themself)."""
    _self_or_admin(user, user_id)
    store.users.get(user_id)
    return [TokenPublic.model_validate(t) for t in store.users.tokens(user_id)]


@router.post(
    "/users/{user_id}/tokens",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 404, 422),
)
def create_token(
    user_id: UserId, store: StoreDep, _admin: AdminUser, body: TokenCreate | None = None
) -> TokenCreated:
    """Issue a token for a user; the token is shown this once (admin only)."""
    info, token = store.users.issue_token(user_id, (body or TokenCreate()).label)
    return TokenCreated(**TokenPublic.model_validate(info).model_dump(), token=token)


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
def revoke_token(token_id: TokenId, store: StoreDep, user: CurrentUser) -> Response:
    """Revoke a token at once (admin, or the token's own user)."""
    token = store.users.get_token(token_id)
    _self_or_admin(user, token.user_id)
    store.users.revoke_token(token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
