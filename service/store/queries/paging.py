"""Pages of rows: limits, sort keys and opaque keyset cursors, shared by every list query.

A page is `LIMIT/OFFSET` or a keyset cursor; a total is `COUNT(*)`. Nothing loads a whole
list into Python to page it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")

MAX_LIMIT = 500
# A mapped column (Run.value) or any SQL expression (a correlated subquery) to sort by.
SortColumn = ColumnElement[Any] | InstrumentedAttribute[Any]


class InvalidQuery(ValueError):
    """A filter, sort or cursor the caller gave cannot be used; `loc` names the parameter."""

    def __init__(self, loc: str, msg: str) -> None:
        super().__init__(f"{loc}: {msg}")
        self.loc = loc
        self.msg = msg


@dataclass(frozen=True)
class PageResult(Generic[T]):
    """One page of rows and how to get the next."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next_cursor: str | None


# -- sorting and keyset cursors --------------------------------------------------------------
@dataclass(frozen=True)
class Sort:
    """A sort key: `name` (with a leading '-' for descending) resolved to a SQL expression."""

    name: str
    expr: SortColumn
    descending: bool


def parse_sort(sort: str, keys: dict[str, SortColumn]) -> Sort:
    """'-value' → Sort(value, descending); unknown keys are refused naming the valid ones."""
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    if name not in keys:
        valid = ", ".join(sorted(keys))
        raise InvalidQuery(
            "query.sort", f"unknown sort key {name!r}; valid: {valid} (prefix - for descending)"
        )
    return Sort(name=sort, expr=keys[name], descending=descending)


def _ordered(sort: Sort, id_col: SortColumn) -> list[Any]:
    if sort.descending:
        return [sort.expr.desc(), id_col.desc()]
    return [sort.expr.asc(), id_col.asc()]


def _id_beyond(sort: Sort, id_col: SortColumn, last_id: int) -> ColumnElement[bool]:
    return id_col < last_id if sort.descending else id_col > last_id


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"}:
        return datetime.fromisoformat(value["t"])
    return value


def encode_cursor(sort: Sort, value: Any, last_id: int) -> str:
    """An opaque cursor pointing just after (value, id) in `sort` order."""
    raw = json.dumps([sort.name, _encode_value(value), last_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort) -> tuple[Any, int]:
    """(value, id) of a cursor made for the same sort; InvalidQuery otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, value, last_id = json.loads(raw)
        value = _decode_value(value)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidQuery("query.cursor", "not a cursor this API returned") from error
    if name != sort.name:
        raise InvalidQuery(
            "query.cursor", f"cursor was made for sort {name!r}; use the same sort or drop it"
        )
    if not isinstance(last_id, int) or not (
        value is None or isinstance(value, (int, float, str, datetime))
    ):
        raise InvalidQuery("query.cursor", "not a cursor this API returned")
    return value, last_id


def _fetch(session: Session, query: Select[Any], offset: int, limit: int) -> list[Any]:
    return list(session.execute(query.offset(offset).limit(limit)).mappings().all())


def page_rows(
    session: Session,
    query: Select[Any],
    sort: Sort,
    id_col: SortColumn,
    *,
    limit: int,
    offset: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """Rows of one page (mappings) and the cursor after its last row.

    The order is: rows with a sort value (ascending or descending, ties by id), then rows without
    one (unfinished trials) by id. It is read as two queries, valued rows first, because each is
    then an index range scan in either direction on both databases (a single
    `ORDER BY x DESC NULLS LAST` cannot walk an ascending index). One extra row tells whether a
    next page exists.
    """
    query = query.add_columns(sort.expr.label("_sort_value"), id_col.label("_sort_id"))
    value: Any = None
    last_id: int | None = None
    if cursor:
        value, last_id = decode_cursor(cursor, sort)
    in_nulls = last_id is not None and value is None
    rows: list[Any] = []
    head_skipped = 0
    if not in_nulls:
        head = query.where(sort.expr.is_not(None))
        if last_id is not None:
            bound = literal(value, type_=sort.expr.type)
            beyond = sort.expr < bound if sort.descending else sort.expr > bound
            same = and_(sort.expr == bound, _id_beyond(sort, id_col, last_id))
            head = head.where(or_(beyond, same))
        rows = _fetch(session, head.order_by(*_ordered(sort, id_col)), offset, limit + 1)
        if not rows and offset:
            head_skipped = count_rows(session, head)  # the offset stepped over every valued row
    if len(rows) <= limit:
        tail = query.where(sort.expr.is_(None))
        if in_nulls and last_id is not None:
            tail = tail.where(_id_beyond(sort, id_col, last_id))
        tail_offset = 0 if rows else max(offset - head_skipped, 0)
        by_id = id_col.desc() if sort.descending else id_col.asc()
        rows += _fetch(session, tail.order_by(by_id), tail_offset, limit + 1 - len(rows))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(sort, last["_sort_value"], last["_sort_id"])
    return rows, next_cursor


def count_rows(session: Session, query: Select[Any]) -> int:
    return int(
        session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    )


def check_limit(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("query.limit", f"must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise InvalidQuery("query.offset", "must be 0 or more")
