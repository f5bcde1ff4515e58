"""Errors a user can meet at the command line, turned into one actionable sentence."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from service.migrate import SchemaOutOfDate


def user_message(error: BaseException) -> str | None:
    """The message to print for an expected error, or None for a real bug (show the traceback)."""
    if isinstance(error, SchemaOutOfDate):
        return str(error)
    if isinstance(error, OperationalError):
        return (
            f"cannot use the database ({str(error.orig).strip().splitlines()[0]}); check "
            "ACTSEARCH_DATABASE_URL / --database-url and that the server is running"
        )
    try:
        from search_space.spec import SpecError
    except ImportError:
        return None
    if isinstance(error, SpecError):
        return f"invalid spec: {error}"
    return None
