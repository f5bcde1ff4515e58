"""Column types of our tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware UTC datetime.

    PostgreSQL keeps the offset (timestamptz) but hands values back in the session's time
    zone; SQLite stores text without any offset and hands back naive datetimes. Values are
    converted to UTC on the way in (SQLite would otherwise store a local wall-clock time as if
    it were UTC) and marked UTC on the way out, so no caller repairs them. The column is still
    `DateTime(timezone=True)`: the migrations need no change.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """UTC before it is stored (or compared)."""
        return None if value is None else as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Aware UTC as it is read."""
        return None if value is None else as_utc(value)

    @property
    def python_type(self) -> type[datetime]:
        """datetime (what the column holds)."""
        return datetime
