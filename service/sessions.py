"""Dashboard session cookies: the token, signed with a secret every API process shares.

The session's CSRF token is derived from the same secret and the session's token: every API
process computes the same one without storing anything, and only a page of the session knows it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from service.db import Meta
from service.store import Database

SECRET_KEY = "session_secret"


class SessionSigner:
    """Signs and checks the session cookie (`token.signature`)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def _sign(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, token: str) -> str:
        """The CSRF token of the session of `token` (the pages send it back in X-CSRF-Token)."""
        # A separate purpose string: the CSRF token never equals (or reveals) the cookie's signature.
        return hmac.new(self._secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()

    def cookie_for(self, token: str) -> str:
        """The cookie value for a verified token."""
        return f"{token}.{self._sign(token)}"

    def token_from_cookie(self, cookie: str | None) -> str | None:
        """The token inside a genuine cookie, else None."""
        if not cookie or "." not in cookie:
            return None
        token, signature = cookie.rsplit(".", 1)
        return token if hmac.compare_digest(signature, self._sign(token)) else None


def shared_secret(db: Database, configured: str = "") -> str:
    """The configured secret, or one generated once and kept in the database for all processes.

    Server processes start together on a fresh database: whichever inserts first wins, the others
    (ON CONFLICT DO NOTHING, waiting for the winner's commit) read its secret.
    """
    if configured:
        return configured
    insert = sqlite.insert if db.sqlite else postgresql.insert
    with db.session(immediate=True) as session:
        session.execute(
            insert(Meta)
            .values(key=SECRET_KEY, value=secrets.token_hex(32))
            .on_conflict_do_nothing(index_elements=["key"])
        )
        value = session.scalar(select(Meta.value).where(Meta.key == SECRET_KEY))
    assert value is not None
    return value
