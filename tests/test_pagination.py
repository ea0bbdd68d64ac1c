"""One cursor codec (api/core/pagination.py) behind every paginated list, and one error
for a cursor that is not one of ours."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.core.errors import Invalid
from api.core.pagination import (
    MAX_CURSOR_LENGTH,
    after_id,
    decode_cursor,
    encode_cursor,
    id_cursor,
)
from tests.conftest import Tenant
from tests.test_registry import claimed_kit

V1 = "/api/v1"
MALFORMED = {
    "code": "validation_error",
    "message": "malformed cursor",
    "details": [{"loc": ["query", "cursor"], "msg": "not a cursor"}],
}

_values = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.uuids(),
    st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5))]),
    ),
)


@given(values=st.lists(_values, min_size=1, max_size=3))
def test_a_cursor_decodes_to_what_was_encoded(values: list[Any]) -> None:
    try:
        cursor = encode_cursor(*values)
    except ValueError as exc:
        # Too long to decode: refused when encoded, never handed out.
        assert f"(at most {MAX_CURSOR_LENGTH})" in str(exc)
        return
    assert cursor.isascii() and "=" not in cursor  # safe in a query string as it is
    assert decode_cursor(cursor, *(type(v) for v in values)) == tuple(values)


def test_the_longest_real_keys_fit_in_a_cursor() -> None:
    """What lists page by: serials (ASCII, at most 100 characters), times, ids."""
    longest = [
        ("A" * 100,),
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), uuid.uuid4()),
    ]
    for values in longest:
        assert decode_cursor(encode_cursor(*values), *(type(v) for v in values)) == values


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("cursor", "types"),
    [
        ("!!!", (str,)),
        ("", (str,)),
        (_b64("not json"), (str,)),
        (_b64(json.dumps({"a": 1})), (str,)),
        (encode_cursor("x", 1), (str,)),  # another list's cursor: wrong arity
        (encode_cursor("x"), (int,)),  # wrong type
        (_b64("[true]"), (int,)),  # a bool is no int
        (encode_cursor("2026-01-01T00:00:00"), (datetime,)),  # naive time
        (encode_cursor("not a uuid"), (uuid.UUID,)),
        (encode_cursor(7), (uuid.UUID,)),
        (_b64("[" * 300 + "]" * 300), (str,)),
        ("A" * 501, (str,)),
        (base64.urlsafe_b64encode(b"\xff\xfe").decode(), (str,)),
    ],
)
def test_anything_else_is_the_one_malformed_cursor_error(cursor: str, types: tuple) -> None:
    with pytest.raises(Invalid) as refused:
        decode_cursor(cursor, *types)
    assert refused.value.message == "malformed cursor"
    assert refused.value.details == MALFORMED["details"]


def test_id_cursors_hold_the_canonical_id() -> None:
    some = uuid.uuid4()
    assert after_id(id_cursor(str(some).upper())) == str(some)
    assert after_id(None) is None


async def test_every_list_answers_a_bad_cursor_alike(client, admin_headers, tenant: Tenant) -> None:
    _, drones = await claimed_kit(client, admin_headers, tenant)
    venue = str(uuid.uuid4())
    lists = [
        ("/blobs", tenant.headers),
        ("/kits", tenant.headers),
        ("/drones", tenant.headers),
        (f"/drones/{drones[0]}/events", tenant.headers),
        (f"/drones/{drones[0]}/heartbeats", tenant.headers),
        (f"/drones/{drones[0]}/updates", tenant.headers),
        ("/venues", tenant.headers),
        ("/operations", tenant.headers),
        (f"/world-model/nodes?venue_id={venue}", tenant.headers),
        (f"/world-model/edges?venue_id={venue}", tenant.headers),
        ("/auth/customers", admin_headers),
    ]
    other_lists_cursor = encode_cursor("serial", 5)
    for path, headers in lists:
        for bad in ("!!!", other_lists_cursor, str(uuid.uuid4())):
            joiner = "&" if "?" in path else "?"
            response = await client.get(f"{V1}{path}{joiner}cursor={bad}", headers=headers)
            assert response.status_code == 422, (path, bad, response.text)
            assert response.json()["error"] == MALFORMED, (path, bad)


async def test_id_ordered_lists_page_through_with_opaque_cursors(client, tenant: Tenant) -> None:
    made = set()
    for n in range(5):
        answer = await client.post(f"{V1}/venues", headers=tenant.headers, json={"name": f"V{n}"})
        made.add(answer.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(f"{V1}/venues", headers=tenant.headers, params=params)).json()
        seen += [v["id"] for v in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert after_id(cursor) == seen[-1]  # opaque, yet just the last id inside
    assert seen == sorted(made)
