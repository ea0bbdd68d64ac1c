"""What both stores can hold: the one place that says which values a request may carry.

Postgres is the system of record and Neo4j its projection (DESIGN.md §4). A
value either store refuses must be refused at the door — 422, or a push
mutation's `rejected` — never journaled, where it would wedge the tenant's
projection or fail a whole request with a 500. Request schemas use the types
and the base model below; nothing else decides these rules.

- Text: no NUL (U+0000: Postgres text and jsonb cannot hold it) and no lone
  surrogate (not encodable as UTF-8, so neither store nor a JSON response
  can carry it). Map keys count as text.
- Nesting: lists and maps at most `MAX_DEPTH` levels deep (the JSON encoders
  and the Neo4j driver recurse).
- Integers: signed 64-bit. Floats: finite (JSON and jsonb have no NaN).
- Datetimes: with a UTC offset (a zone-less value is refused: Neo4j would
  store a LocalDateTime that never compares with the zoned ones), the offset
  a whole number of minutes within ±18:00 (Neo4j's range), the instant
  between 0001-01-01 and 9999-12-31 in UTC (the driver converts through
  UTC). Query-string filters read a zone-less value as UTC (nothing is stored).
- Property lists (Neo4j arrays): all strings, all booleans or all numbers; no
  null, no list or map inside. Integers mixed with floats become floats, as
  Neo4j would store them, so the journal and the graph hold the same value.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ValidatorFunctionWrapHandler, model_validator
from starlette.requests import HTTPConnection

from api.core.errors import Invalid

MAX_DEPTH = 32
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_OFFSET = timedelta(hours=18)


def text_problem(value: str) -> str | None:
    """Why this text cannot be stored, or None."""
    if "\x00" in value:
        return "contains a NUL character (U+0000), which cannot be stored"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate, which is not valid Unicode"
    return None


def printable(value: Any) -> Any:
    """`value` with NUL and lone surrogates escaped, for error messages that
    echo input and are stored (push outcomes) or sent as JSON."""
    if isinstance(value, str):
        if text_problem(value) is None:
            return value
        return value.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


# A path as a linked list, (parent, key), built only as far as the walk goes.
_Path = tuple[Any, Any] | None


def _where(path: _Path) -> str:
    parts: list[Any] = []
    while path is not None:
        path, part = path
        parts.append(part)
    out = ""
    for part in reversed(parts):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(printable(part))[:64]
    return out or "value"


def unstorable(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """Why parsed JSON `value` cannot be stored, naming where; None if it can.

    Iterative, so a hostile nesting depth never exhausts the stack.
    """
    if _clean(value, 0, max_depth):
        return None
    stack: list[tuple[Any, int, _Path]] = [(value, 0, None)]
    while stack:
        item, depth, path = stack.pop()
        kind = type(item)
        if kind not in _JSON_TYPES:
            item = _as_json(item)
            kind = type(item)
        if kind is str:
            if problem := text_problem(item):
                return f"{_where(path)}: text {problem}"
        elif kind is dict or kind is list:
            if depth >= max_depth:
                return f"{_where(path)}: nested deeper than {max_depth} levels"
            if kind is dict:
                for key, child in item.items():
                    if isinstance(key, str) and (problem := text_problem(key)):
                        return f"{_where(path)}: a key {problem}"
                    stack.append((child, depth + 1, (path, key)))
            else:
                stack.extend((child, depth + 1, (path, i)) for i, child in enumerate(item))
        elif kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                return f"{_where(path)}: integer outside the signed 64-bit range"
        elif kind is float and not math.isfinite(item):
            return f"{_where(path)}: NaN and infinity cannot be stored"
    return None


_JSON_TYPES = frozenset({str, dict, list, int, float, bool, type(None)})


def _clean(item: Any, depth: int, max_depth: int) -> bool:
    """True only if `unstorable`'s walk would find nothing: the common, clean
    request checked without building paths (leaves checked inline, recursion
    bounded by `max_depth`). False sends the value through that walk, which
    names the problem (or finds none, for types JSON parsing never makes)."""
    kind = type(item)
    if kind is dict:
        if depth >= max_depth:
            return False
        children: Any = item.values()
        for key in item:
            if type(key) is not str or "\x00" in key or not key.isascii():
                if not isinstance(key, str) or text_problem(key) is None:
                    continue
                return False
    elif kind is list:
        if depth >= max_depth:
            return False
        children = item
    else:
        children = (item,)
        depth -= 1  # a lone scalar: checked below as if it were a child
    for child in children:
        kind = type(child)
        if kind is str:
            if "\x00" in child or not (child.isascii() or text_problem(child) is None):
                return False
        elif kind is float:
            if not math.isfinite(child):
                return False
        elif kind is int:
            if not INT64_MIN <= child <= INT64_MAX:
                return False
        elif kind is dict or kind is list:
            if not _clean(child, depth + 1, max_depth):
                return False
        elif kind is not bool and child is not None:
            return False
    return True


def _as_json(item: Any) -> Any:
    """What JSON parsing would have made of a subclass (a str enum) or a tuple."""
    if isinstance(item, bool):
        return bool(item)
    if isinstance(item, str):
        return str(item)
    if isinstance(item, int):
        return int(item)
    if isinstance(item, float):
        return float(item)
    if isinstance(item, dict):
        return dict(item)
    return list(item) if isinstance(item, list | tuple) else None


class StorableModel(BaseModel):
    """A request body: before any field is read, every string (keys included),
    number and nesting level of the raw input is checked (`unstorable`), so a
    refusal never echoes an unstorable value back."""

    @model_validator(mode="wrap")
    @classmethod
    def _storable(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # A model nested in one being validated gets part of the input the
        # outer one already walked (no validator here transforms input first):
        # walking it again (a batch's every node's position) only costs time.
        if not isinstance(data, dict) or _WALKED.get():
            return handler(data)
        if problem := unstorable(data):
            raise ValueError(problem)
        token = _WALKED.set(True)
        try:
            return handler(data)
        finally:
            _WALKED.reset(token)


# True while a StorableModel validates the input `unstorable` already walked.
_WALKED: ContextVar[bool] = ContextVar("storable_walked", default=False)


def check_text(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(f"text {problem}")
    return value


StorableText = Annotated[str, AfterValidator(check_text)]


def _instant_problem(value: datetime) -> str | None:
    offset = value.utcoffset()
    assert offset is not None
    if offset % timedelta(minutes=1):
        return "the UTC offset must be a whole number of minutes"
    if abs(offset) > MAX_OFFSET:
        return "the UTC offset must be within ±18:00"
    try:
        value.astimezone(UTC)
    except OverflowError:
        return "the time lies outside 0001-01-01 to 9999-12-31 in UTC"
    return None


def check_datetime(value: datetime) -> datetime:
    """A datetime both stores hold and compare: zoned, offset ±18:00, in range in UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset (e.g. 2026-11-22T10:00:00Z)")
    if problem := _instant_problem(value):
        raise ValueError(problem)
    return value


def check_filter_datetime(value: datetime) -> datetime:
    """A query-string datetime: zone-less means UTC; otherwise as `check_datetime`."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return check_datetime(value)


StorableDatetime = Annotated[datetime, AfterValidator(check_datetime)]
FilterDatetime = Annotated[datetime, AfterValidator(check_filter_datetime)]


def check_property_list(key: str, items: list[Any]) -> list[Any]:
    """A Neo4j array property: homogeneous primitives; ints among floats become floats."""
    kinds = set()
    for element in items:
        if element is None:
            raise ValueError(f"property {key!r}: a list cannot hold null")
        if isinstance(element, bool):
            kinds.add("boolean")
        elif isinstance(element, int | float):
            kinds.add("float" if isinstance(element, float) else "integer")
        elif isinstance(element, str):
            kinds.add("string")
        else:
            raise ValueError(f"property {key!r}: a list holds strings, numbers or booleans only")
    if len(kinds - {"integer", "float"}) + bool(kinds & {"integer", "float"}) > 1:
        raise ValueError(
            f"property {key!r}: a list's items must all be strings, all numbers "
            f"or all booleans (got {', '.join(sorted(kinds))})"
        )
    if kinds == {"integer", "float"}:
        return [float(element) for element in items]
    return items


def check_cypher_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters the Neo4j driver can send (ints fit 64 bits, bounded nesting)."""
    if problem := unstorable(params):
        raise ValueError(problem)
    return params


def refuse_unstorable_parameters(connection: HTTPConnection) -> None:
    """Query and path parameters hold no NUL or lone surrogate (`V1Route`).

    They end up in Postgres statements (filters, cursors, serials), which
    cannot carry them; refused with 422 before any dependency or endpoint runs.
    """
    query = connection.scope.get("query_string")
    for where, items in (
        ("query", connection.query_params.multi_items() if query else ()),
        ("path", list(connection.path_params.items())),
    ):
        for name, value in items:
            for text in (name, value):
                if isinstance(text, str) and (problem := text_problem(text)):
                    raise Invalid(
                        f"{where} parameter {printable(name)[:64]!r}: text {problem}",
                        details=[{"loc": [where, printable(name)], "msg": f"text {problem}"}],
                    )
