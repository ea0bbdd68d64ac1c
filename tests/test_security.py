"""Fail closed, answer in the error shape, leak nothing across tenants (issue 14).

Items 3 (who pushes), 5 (search plans), 9 (500s and Neo4j outages), 14 (body
caps) and 15 (whitespace around X-API-Key), on real Postgres, Neo4j and S3;
the keep-alive and header checks run on a real uvicorn server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.core.settings import Settings
from tests.conftest import Tenant
from tests.processes import free_port, raw_request, read_response

V1 = "/api/v1"


def uid() -> str:
    return str(uuid.uuid4())


async def register(client: httpx.AsyncClient, tenant: Tenant, name: str = "ws") -> dict[str, Any]:
    r = await client.post(
        f"{V1}/auth/workstations/register", json={"name": name}, headers=tenant.headers
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def push_body(ws_id: str, *mutations: dict[str, Any]) -> dict[str, Any]:
    return {"workstation_id": ws_id, "protocol_version": 1, "mutations": list(mutations)}


def venue_mutation(mid: int, name: str, venue_id: str | None = None) -> dict[str, Any]:
    return {
        "mutation_id": mid,
        "type": "venue",
        "id": venue_id or uid(),
        "op": "upsert",
        "base_version": 0,
        "data": {"name": name},
    }


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[int]:
    """`app` on a real uvicorn server in this event loop (lifespan included); its port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        await task


async def http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One request on an open connection: (status, lower-cased headers, body)."""
    writer.write(request)
    await writer.drain()
    return await read_response(reader)


# ------------------------------------------------------------------ item 3
async def test_a_customer_key_cannot_push_as_a_workstation_nor_consume_its_ids(client, tenant, pg):
    ws = await register(client, tenant)
    mine = {"X-API-Key": ws["api_key"]}
    stolen = await client.post(
        f"{V1}/sync/push",
        headers=tenant.headers,
        json=push_body(ws["id"], venue_mutation(1, "Pushed by the customer key")),
    )
    assert stolen.status_code == 403, stolen.text
    assert stolen.json()["error"]["code"] == "workstation_key_required"
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM sync_mutations WHERE workstation_id = $1::uuid", ws["id"]
        )
        == 0
    )
    # The workstation's own mutation 1 is its own: applied, not a `duplicate`.
    own = await client.post(
        f"{V1}/sync/push", headers=mine, json=push_body(ws["id"], venue_mutation(1, "Mine"))
    )
    assert own.status_code == 200, own.text
    assert own.json()["results"][0]["status"] == "applied"


# ------------------------------------------------------------------ item 5
async def test_search_plans_show_nothing_that_depends_on_other_tenants(
    client, tenant, other_tenant
):
    """The over-fetch loop's k grows when other tenants' matches crowd the shared
    index: shown to the caller, it measured the platform. The plan a tenant
    sees must not change when another tenant adds data."""
    ws = await register(client, tenant)
    await client.post(
        f"{V1}/sync/push",
        headers={"X-API-Key": ws["api_key"]},
        json=push_body(ws["id"], venue_mutation(1, "Quayside Hall")),
    )

    async def plan() -> dict[str, Any]:
        r = await client.get(
            f"{V1}/venues/search",
            headers=tenant.headers,
            params={"q": "quayside", "mode": "fulltext", "limit": 10},
        )
        assert r.status_code == 200, r.text
        assert [hit["item"]["name"] for hit in r.json()["items"]] == ["Quayside Hall"]
        found: dict[str, Any] = r.json()["plan"]
        return found

    alone = await plan()
    theirs = await register(client, other_tenant)
    crowd = [venue_mutation(n, f"Quayside quayside depot {n}") for n in range(1, 151)]
    r = await client.post(
        f"{V1}/sync/push",
        headers={"X-API-Key": theirs["api_key"]},
        json=push_body(theirs["id"], *crowd),
    )
    assert r.status_code == 200 and {x["status"] for x in r.json()["results"]} == {"applied"}
    crowded = await plan()
    assert crowded == alone == {"fulltext": {"strategy": "index"}}


# ------------------------------------------------------------------ item 9
@pytest.fixture
async def failing_app(settings: Settings) -> FastAPI:
    """The real app plus one test-only route that fails like a bug would."""
    from main import create_app

    app = create_app(settings, background=False)

    @app.get("/test-only/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("a bug no handler knows")

    return app


async def test_an_unhandled_error_is_a_500_with_request_id_on_a_connection_that_stays_open(
    failing_app,
):
    async with served(failing_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            status, headers, body = await http_exchange(
                reader,
                writer,
                raw_request("GET", "/test-only/boom", {"X-Request-ID": "boom-1"}),
            )
            assert status == 500
            assert headers.get("x-request-id") == "boom-1"
            error = json.loads(body)["error"]
            assert error["code"] == "internal_error" and "RuntimeError" not in body.decode()
            # The same connection serves the next request: it was not dropped.
            status, headers, _ = await http_exchange(reader, writer, raw_request("GET", "/healthz"))
            assert status == 200 and headers.get("x-request-id")
        finally:
            writer.close()


async def test_reads_with_neo4j_down_are_503_naming_neo4j(settings: Settings, client, tenant):
    from main import create_app

    ws = await register(client, tenant)  # through the healthy app
    dead = settings.model_copy(update={"neo4j_uri": f"bolt://127.0.0.1:{free_port()}"})
    app = create_app(dead, background=False)
    reads = [
        f"{V1}/venues",
        f"{V1}/venues/{uid()}",
        f"{V1}/world-model/nodes/{uid()}",
        f"{V1}/operations",
        f"{V1}/venues/search?q=harbour&mode=fulltext",
    ]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=tenant.headers
        ) as down,
    ):
        answers = await asyncio.gather(*(down.get(path) for path in reads))
        # Pushes do not need Neo4j: accepted, applied later by the reconciler.
        pushed = await down.post(
            f"{V1}/sync/push",
            headers={"X-API-Key": ws["api_key"]},
            json=push_body(ws["id"], venue_mutation(1, "While Neo4j is down")),
        )
    for path, answer in zip(reads, answers, strict=True):
        assert answer.status_code == 503, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "neo4j_unavailable", (path, error)
        assert error["details"]["dependency"] == "neo4j"
        assert answer.headers.get("x-request-id")
    assert pushed.status_code == 200, pushed.text


# ------------------------------------------------------------------ item 14
async def test_every_body_is_capped_before_it_is_parsed(client, tenant, settings, pg):
    cap = settings.request_max_body_bytes
    venue = json.dumps({"name": "Padded"}).encode()
    padded = venue[:-1] + b" " * (2 * cap) + b"}"  # valid JSON, twice the cap

    declared = await client.post(
        f"{V1}/venues",
        headers=tenant.headers | {"Content-Type": "application/json"},
        content=padded,
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(padded), 65536):
            yield padded[start : start + 65536]

    streamed = await client.post(
        f"{V1}/venues",
        headers=tenant.headers | {"Content-Type": "application/json"},
        content=chunks(),
    )
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text[:300]
        assert answer.json()["error"] == {
            "code": "payload_too_large",
            "message": "request body too large; nothing was recorded",
            "details": {"max_bytes": cap},
        }
        assert answer.headers.get("x-request-id")
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM sync_journal WHERE customer_id = $1::uuid", tenant.id
        )
        == 0
    )
    # Under the cap, the same venue is created.
    small = await client.post(f"{V1}/venues", headers=tenant.headers, json={"name": "Small"})
    assert small.status_code == 201, small.text


async def test_push_keeps_its_own_larger_cap(client, tenant, settings):
    assert settings.sync_max_body_bytes > settings.request_max_body_bytes
    ws = await register(client, tenant)
    body = json.dumps(push_body(ws["id"], venue_mutation(1, "Big push"))).encode()
    padded = body[:-1] + b" " * (settings.request_max_body_bytes + 1) + b"}"
    assert len(padded) < settings.sync_max_body_bytes
    r = await client.post(
        f"{V1}/sync/push",
        headers={"X-API-Key": ws["api_key"], "Content-Type": "application/json"},
        content=padded,
    )
    assert r.status_code == 200, r.text[:300]
    assert r.json()["results"][0]["status"] == "applied"


# ------------------------------------------------------------------ item 15
@pytest.mark.parametrize("around", [(" ", ""), ("", " "), (" ", " "), ("\t", "\t")])
async def test_whitespace_around_the_api_key_is_ignored_on_both_sides(client, tenant, around):
    before, after = around
    r = await client.get(f"{V1}/auth/me", headers={"X-API-Key": f"{before}{tenant.key}{after}"})
    assert r.status_code == 200, r.text
    assert r.json()["customer_id"] == tenant.id


async def test_whitespace_around_the_api_key_on_a_real_server(failing_app, client, tenant):
    # HTTP servers differ in which side they strip; the key must work either way.
    async with served(failing_app) as port:
        for value in (f" {tenant.key}", f"{tenant.key}  "):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                status, _, body = await http_exchange(
                    reader,
                    writer,
                    raw_request("GET", f"{V1}/auth/me", {"X-API-Key": value}),
                )
            finally:
                writer.close()
            assert status == 200, (value, body)
    blank = await client.get(f"{V1}/auth/me", headers={"X-API-Key": "  "})
    assert blank.status_code == 401
