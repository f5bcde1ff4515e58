"""Users and bearer tokens; a token is shown once and stored only as its SHA-256 digest."""

from __future__ import annotations

import builtins
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update

from service.db import Token, User, utcnow
from service.store.base import Conflict, Database, NotFound

TOKEN_PREFIX = "as_"
# last_used_at is refreshed at most this often, so authenticating stays a read on most requests.
LAST_USED_RESOLUTION = timedelta(minutes=5)


# A live token's id, last use and owner (UserInfo's fields): built once, every request runs it.
TOKEN_OWNER = (
    select(Token.id, Token.last_used_at, User.id, User.name, User.is_admin, User.created_at)
    .join(User, User.id == Token.user_id)
    .where(Token.digest == bindparam("digest"), Token.revoked_at.is_(None))
)


def token_digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class UserInfo:
    """A user as the rest of the code sees it."""

    id: int
    name: str
    is_admin: bool
    created_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    """A token's metadata; the secret itself is never stored."""

    id: int
    user_id: int
    prefix: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _user(row: User) -> UserInfo:
    return UserInfo(id=row.id, name=row.name, is_admin=row.is_admin, created_at=row.created_at)


def _token(row: Token) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        user_id=row.user_id,
        prefix=row.prefix,
        label=row.label,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class Users:
    """Create users, issue and check tokens."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, *, is_admin: bool = False) -> tuple[UserInfo, str]:
        """Create a user with a first token; returns the user and the token (shown once)."""
        # Immediate: a read then a write. On SQLite a deferred transaction whose snapshot another
        # writer committed past fails at its first write with "database is locked" at once,
        # without waiting (SQLITE_BUSY_SNAPSHOT); BEGIN IMMEDIATE waits for the lock instead.
        with self.db.session(immediate=True) as session:
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise Conflict(f"user {name!r} already exists")
            user = User(name=name, is_admin=is_admin, created_at=utcnow())
            session.add(user)
            session.flush()
            token = self._issue(session, user.id, "initial")
            return _user(user), token

    def issue_token(self, user_id: int, label: str = "") -> tuple[TokenInfo, str]:
        """A new token for an existing user."""
        with self.db.session(immediate=True) as session:  # a read then a write (see create)
            if session.get(User, user_id) is None:
                raise NotFound(f"user {user_id} does not exist")
            token = self._issue(session, user_id, label)
            row = session.scalars(select(Token).where(Token.digest == token_digest(token))).one()
            return _token(row), token

    @staticmethod
    def _issue(session: object, user_id: int, label: str) -> str:
        token = new_token()
        row = Token(
            user_id=user_id,
            digest=token_digest(token),
            prefix=token[:10],
            label=label,
            created_at=utcnow(),
        )
        session.add(row)  # type: ignore[attr-defined]
        return token

    def authenticate(self, token: str) -> UserInfo | None:
        """The user a live token belongs to, or None.

        Every request asks: one Core statement on a read connection (no ORM objects built). The
        rare last_used_at refresh is a write transaction of its own: upgrading the read would
        fail at once on SQLite when another request writes (its snapshot is stale)."""
        with self.db.read_connection() as connection:
            found = connection.execute(TOKEN_OWNER, {"digest": token_digest(token)}).first()
        if found is None:
            return None
        token_id, last_used_at, user_id, name, is_admin, created_at = found
        now = utcnow()
        if last_used_at is None or last_used_at < now - LAST_USED_RESOLUTION:
            self._touch(token_id, now)
        return UserInfo(id=user_id, name=name, is_admin=is_admin, created_at=created_at)

    def _touch(self, token_id: int, now: datetime) -> None:
        stale = or_(Token.last_used_at.is_(None), Token.last_used_at < now - LAST_USED_RESOLUTION)
        with self.db.session(immediate=True) as session:  # racing requests: one writes
            session.execute(
                update(Token).where(Token.id == token_id, stale).values(last_used_at=now)
            )

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token; it stops working at once."""
        with self.db.session() as session:
            row = session.get(Token, token_id)
            if row is None:
                raise NotFound(f"token {token_id} does not exist")
            row.revoked_at = row.revoked_at or utcnow()

    def list(self) -> list[UserInfo]:
        """Every user, by name."""
        with self.db.session() as session:
            return [_user(u) for u in session.scalars(select(User).order_by(User.name))]

    def tokens(self, user_id: int) -> builtins.list[TokenInfo]:
        """A user's tokens (metadata only)."""
        with self.db.session() as session:
            rows = session.scalars(select(Token).where(Token.user_id == user_id).order_by(Token.id))
            return [_token(t) for t in rows]

    def get(self, user_id: int) -> UserInfo:
        """A user by id."""
        with self.db.session() as session:
            row = session.get(User, user_id)
            if row is None:
                raise NotFound(f"user {user_id} does not exist")
            return _user(row)

    def get_token(self, token_id: int) -> TokenInfo:
        """A token's metadata by id."""
        with self.db.session() as session:
            row = session.get(Token, token_id)
            if row is None:
                raise NotFound(f"token {token_id} does not exist")
            return _token(row)

    def get_by_name(self, name: str) -> UserInfo:
        """A user by name."""
        with self.db.session() as session:
            row = session.scalars(select(User).where(User.name == name)).first()
            if row is None:
                raise NotFound(f"user {name!r} does not exist")
            return _user(row)

    def count(self) -> int:
        """How many users exist (the first start creates an admin when there are none)."""
        with self.db.session() as session:
            return len(session.scalars(select(User.id)).all())
