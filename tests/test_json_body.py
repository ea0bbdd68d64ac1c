"""orjson parses request bodies (api/core/json_body.py) exactly as json.loads would."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.core.json_body import parse_json

SAME_AS_JSON_LOADS = [
    b'{"nodes": [{"name": "a", "position": {"x": 1.5, "y": -0.0}}]}',
    b"18446744073709551616",  # 2**64: orjson alone would read a float
    b'{"properties": {"big": 123456789012345678901234567890}}',
    b"9223372036854775808",  # 2**63: an int either way (refused later as unstorable)
    b"-9223372036854775809",  # -2**63 - 1, 19 digits: orjson alone would read a float
    b'{"x": -18446744073709551616}',
    b'"a\\u0000b"',
    b'"\\ud800"',  # a lone surrogate: orjson refuses, json.loads keeps it
    b"\xef\xbb\xbf[1]",  # a byte order mark
    '["x"]'.encode("utf-16"),
    b'{"a": 1, "a": 2}',
    b"[1.0000000000000002, 1e-320]",
]


@pytest.mark.parametrize("body", SAME_AS_JSON_LOADS)
def test_parse_json_reads_what_json_loads_reads(body: bytes) -> None:
    expected = json.loads(body)
    parsed = parse_json(body)
    assert parsed == expected
    assert json.dumps(parsed) == json.dumps(expected)  # same types: an int stays an int


# Where orjson's integers end, and where their digit counts change.
EDGES = [sign * edge for sign in (1, -1) for edge in (2**63, 2**64, 10**18, 10**19)]


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.integers(min_value=-(2**70), max_value=2**70)
        | st.builds(int.__add__, st.sampled_from(EDGES), st.integers(-3, 3))
        | st.floats(allow_nan=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_any_json_document_parses_as_json_loads_parses_it(value: object) -> None:
    """Integers around every 64-bit edge included: the fast path never turns one into a float."""
    body = json.dumps(value).encode()
    assert json.dumps(parse_json(body)) == json.dumps(json.loads(body))


def test_non_finite_numbers_still_reach_the_storable_check() -> None:
    assert math.isnan(parse_json(b"[NaN]")[0])
    assert parse_json(bytearray(b"[Infinity]")) == [math.inf]


def test_invalid_json_raises_json_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json(b'{"a": ')
