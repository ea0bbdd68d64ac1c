"""Opaque keyset cursors: one codec for every paginated list.

A page ends with `next_cursor`, the sort key of its last row packed as
base64url JSON (`encode_cursor(created_at, id)`); the next request passes it
back as `cursor` and `decode_cursor(cursor, datetime, uuid.UUID)` unpacks and
type-checks it. Any cursor that does not decode to the expected types, one
from another list included, gets the same 422: `validation_error`, message
`malformed cursor`, details `[{"loc": ["query", "cursor"], "msg": "not a cursor"}]`.

Not for the sync protocol: `after` in pull and bootstrap is a version, part of
the protocol, not an opaque cursor. Depends on api.core.errors only, so any tier
can use it.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel

from api.core.errors import Invalid

MAX_CURSOR_LENGTH = 500  # the longest key packs well under this

# The `cursor` query parameter of every list.
Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page"),
]


def malformed_cursor() -> Invalid:
    """The one error every list answers a bad cursor with."""
    return Invalid(
        "malformed cursor", details=[{"loc": ["query", "cursor"], "msg": "not a cursor"}]
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a cursor's times carry their zone")
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def encode_cursor(*values: Any) -> str:
    """An opaque cursor holding `values` (str, int, aware datetime, UUID), in order."""
    raw = json.dumps([_plain(v) for v in values], separators=(",", ":"), ensure_ascii=False)
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    if len(cursor) > MAX_CURSOR_LENGTH:  # never hand out a cursor `decode_cursor` refuses
        raise ValueError(f"a cursor of {len(cursor)} characters (at most {MAX_CURSOR_LENGTH})")
    return cursor


def _typed(value: Any, kind: type) -> Any:
    if kind is datetime:
        moment = datetime.fromisoformat(value)  # TypeError if not a string
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment
    if kind is uuid.UUID:
        if not isinstance(value, str):
            raise TypeError("not a UUID string")
        return uuid.UUID(value)
    if kind in (str, int) and isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise TypeError(f"not a {kind.__name__}")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The values `encode_cursor` packed, checked against `types`; else `malformed_cursor()`."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong arity")
        return tuple(_typed(v, kind) for v, kind in zip(values, types, strict=True))
    except (ValueError, TypeError, RecursionError) as exc:  # binascii and Unicode errors too
        raise malformed_cursor() from exc


# Lists ordered by entity id (venues, world nodes and edges, operations, customers).
def id_cursor(last_id: uuid.UUID | str) -> str:
    """The cursor of a page of an id-ordered list that ends at `last_id`."""
    return encode_cursor(uuid.UUID(str(last_id)))


def after_uuid(cursor: str | None) -> uuid.UUID | None:
    """The id a page of an id-ordered list starts after (None for the first page)."""
    return None if cursor is None else decode_cursor(cursor, uuid.UUID)[0]


def after_id(cursor: str | None) -> str | None:
    """`after_uuid` as the text the graph stores ids in."""
    after = after_uuid(cursor)
    return None if after is None else str(after)


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = None


def page(items: list[dict[str, Any]], limit: int) -> Page:
    return Page(
        items=items, next_cursor=id_cursor(items[-1]["id"]) if len(items) == limit else None
    )
