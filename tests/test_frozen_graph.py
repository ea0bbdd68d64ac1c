"""A frozen Neo4j (SIGSTOPped: it accepts connections and never answers) never
holds a tenant's pushes.

Before: every push opened a Neo4j transaction while holding the tenant's
counter row and waited for the driver's own timeouts, so each of the
tenant's writers queued behind a hung connection (the chaos harness measured
pushes of 57-86 s). Now a write gives Neo4j a bounded moment, and after a
failure the writes of the next seconds journal only (the reconciler applies
their rows): the counter row is never held for Neo4j's sake.

The frozen server is a listener in this test that accepts and stays silent.
What the test counts is connections it was asked for, not time.
"""

from __future__ import annotations

import asyncio

import httpx

from api.journal.circuit import graph_health
from tests.conftest import Tenant
from tests.journal_state import pending_rows
from tests.test_sync import SYNC, do_push, mutation, register, uid


async def test_pushes_flow_while_neo4j_is_frozen(settings, app, client, tenant: Tenant, pg):
    from main import create_app

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ws, h = await register(client, tenant)
    frozen = create_app(
        settings.model_copy(update={"neo4j_uri": f"bolt://127.0.0.1:{port}"}), background=False
    )
    try:
        async with frozen.router.lifespan_context(frozen):
            transport = httpx.ASGITransport(app=frozen)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                first = await asyncio.wait_for(
                    do_push(c, ws, h, [mutation(1, "venue", uid(), data={"name": "V1"})]), 120
                )
                assert first.status_code == 200, first.text
                assert [r["status"] for r in first.json()["results"]] == ["applied"]
                # The first write found Neo4j frozen; the next ones do not ask it.
                assert graph_health(frozen.state.resources).suspect()
                asked = len(accepted)
                for i in range(2, 7):
                    r = await asyncio.wait_for(
                        do_push(c, ws, h, [mutation(i, "venue", uid(), data={"name": f"V{i}"})]),
                        120,
                    )
                    assert [x["status"] for x in r.json()["results"]] == ["applied"]
                assert len(accepted) == asked
                page = (await c.get(f"{SYNC}/pull?since=0", headers=h)).json()
                assert len(page["changes"]) == 6
    finally:
        for writer in accepted:
            writer.close()
        server.close()
    pending = await pending_rows(pg, tenant.id)
    assert pending == 6


async def test_batch_writes_flow_while_neo4j_is_frozen(settings, client, tenant: Tenant, pg):
    """The REST batch path sends its Neo4j statement ahead of validation
    (TenantTransaction.send_ahead) and waits a bounded moment for it to leave:
    with Neo4j frozen, batches are still journaled and answered, `applied`
    false, and after the first failure the next ones do not ask Neo4j."""
    from main import create_app

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    venue = await client.post("/api/v1/venues", json={"name": "Frozen"}, headers=tenant.headers)
    assert venue.status_code == 201, venue.text
    frozen = create_app(
        settings.model_copy(update={"neo4j_uri": f"bolt://127.0.0.1:{port}"}), background=False
    )

    def nodes(batch: int) -> dict:
        return {
            "nodes": [
                {"venue_id": venue.json()["id"], "kind": "Zone", "name": f"Z{batch}-{i}"}
                for i in range(50)
            ]
        }

    try:
        async with frozen.router.lifespan_context(frozen):
            transport = httpx.ASGITransport(app=frozen)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                url, headers = "/api/v1/world-model/nodes/batch", tenant.headers
                first = await asyncio.wait_for(c.post(url, json=nodes(0), headers=headers), 120)
                assert first.status_code == 200, first.text
                assert first.json()["applied"] is False
                assert graph_health(frozen.state.resources).suspect()
                asked = len(accepted)
                for batch in range(1, 4):
                    r = await asyncio.wait_for(c.post(url, json=nodes(batch), headers=headers), 120)
                    assert r.status_code == 200 and r.json()["applied"] is False, r.text
                assert len(accepted) == asked
    finally:
        for writer in accepted:
            writer.close()
        server.close()
    pending = await pending_rows(pg, tenant.id)
    assert pending == 200


def test_a_postgres_shutting_down_or_starting_up_is_unreachable():
    """57P01/57P03 (a fast shutdown, a restart) answered 500 from authentication
    during the chaos harness's Postgres restarts; they are outages (503)."""
    import asyncpg
    from sqlalchemy.exc import DBAPIError

    from relational.database import is_unreachable

    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    shutting = asyncpg.exceptions.AdminShutdownError("terminating connection")
    assert is_unreachable(starting) and is_unreachable(shutting)
    wrapped = DBAPIError("SELECT 1", {}, shutting)
    assert is_unreachable(wrapped)
    assert not is_unreachable(asyncpg.exceptions.UniqueViolationError("duplicate key"))
