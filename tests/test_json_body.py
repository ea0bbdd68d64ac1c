"""orjson parses request bodies (api/core/json_body.py) exactly as json.loads would."""

from __future__ import annotations

import json
import math

import pytest

from api.core.json_body import parse_json

SAME_AS_JSON_LOADS = [
    b'{"nodes": [{"name": "a", "position": {"x": 1.5, "y": -0.0}}]}',
    b"18446744073709551616",  # 2**64: orjson alone would read a float
    b'{"properties": {"big": 123456789012345678901234567890}}',
    b"9223372036854775808",  # 2**63: an int either way (refused later as unstorable)
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


def test_non_finite_numbers_still_reach_the_storable_check() -> None:
    assert math.isnan(parse_json(b"[NaN]")[0])
    assert parse_json(bytearray(b"[Infinity]")) == [math.inf]


def test_invalid_json_raises_json_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json(b'{"a": ')
