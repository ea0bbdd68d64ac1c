"""While a request with a large body runs, the cycle collector's youngest
generation waits for more allocations (api/core/collector.py); it is set back
when the last such request ends, whatever order they end in and however."""

from __future__ import annotations

import asyncio
import gc
import json

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from api.core.collector import LARGE_BODY_BYTES, LARGE_THRESHOLD, fewer_collections
from api.core.json_body import OrjsonRoute


@pytest.fixture
def default_threshold():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield (700, 10, 10)
    gc.set_threshold(*before)


def test_overlapping_holders_set_it_back_only_when_the_last_leaves(default_threshold) -> None:
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    assert gc.get_threshold() == (LARGE_THRESHOLD, 10, 10)
    second.__enter__()
    first.__exit__(None, None, None)  # the first to come is the first to go
    assert gc.get_threshold() == (LARGE_THRESHOLD, 10, 10)
    second.__exit__(None, None, None)
    assert gc.get_threshold() == default_threshold


def test_a_failing_holder_sets_it_back(default_threshold) -> None:
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("the request failed")
    assert gc.get_threshold() == default_threshold


async def test_only_requests_with_a_large_body_raise_it(default_threshold) -> None:
    router = APIRouter(route_class=OrjsonRoute)
    seen: list[int] = []

    @router.post("/echo")
    async def echo(body: dict) -> dict:
        await asyncio.sleep(0)
        seen.append(gc.get_threshold()[0])
        return {"n": len(body["items"])}

    app = FastAPI()
    app.include_router(router)
    small = json.dumps({"items": ["x"]}).encode()
    large = json.dumps({"items": ["x" * 100] * (LARGE_BODY_BYTES // 100)}).encode()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for body in (small, large, small):
            response = await client.post(
                "/echo", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 200, response.text
    assert seen == [700, LARGE_THRESHOLD, 700]
    assert gc.get_threshold() == default_threshold
