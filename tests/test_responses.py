"""`SplicedResponse`: a body sent in parts reads as the parts joined, with a
Content-Length that is their sum (the pull page is sent this way)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from api.core.responses import SplicedResponse


async def _parts(_request: object) -> SplicedResponse:
    return SplicedResponse([b'{"changes":[', b"1,2," * 50_000 + b"3", b'],"cursor":3}'])


async def test_a_spliced_body_is_its_parts_joined_with_their_length() -> None:
    app = Starlette(routes=[Route("/", _parts)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.json()["changes"][-1] == 3 and r.json()["cursor"] == 3


def test_a_spliced_response_needs_a_part() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        SplicedResponse([])
