"""Concurrent writers: no PATCH loses another's change, and one tenant's queue
of writers never takes the connection pool from the other tenants.

Real concurrency: many requests at once through the in-process app (one event
loop, one connection pool of DATABASE_POOL_SIZE=10 plus as many overflow, as
in production), against the real Postgres and Neo4j.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from api.journal.tenant_gate import gate_of
from tests.conftest import Tenant

V1 = "/api/v1"
FIELDS: dict[str, Any] = {
    "name": "Harbour Mall (renamed)",
    "address": "1 Quay Street",
    "description": "three levels, roof access",
    "tags": ["mall", "roof"],
    "location": {"latitude": 51.5, "longitude": -0.12},
    "properties": {"floors": 3},
}


async def test_concurrent_patches_of_different_fields_all_survive(client, tenant):
    h = tenant.headers
    venues = []
    for n in range(8):
        r = await client.post(f"{V1}/venues", headers=h, json={"name": f"Venue {n}"})
        assert r.status_code == 201, r.text
        venues.append(r.json()["id"])

    # Every field of every venue patched at once: 48 concurrent PATCHes.
    responses = await asyncio.gather(
        *(
            client.patch(f"{V1}/venues/{venue}", headers=h, json={field: value})
            for venue in venues
            for field, value in FIELDS.items()
        )
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    for venue in venues:
        r = await client.get(f"{V1}/venues/{venue}", headers=h)
        body = r.json()
        kept = {field: body.get(field) for field in FIELDS}
        assert kept["name"] == FIELDS["name"]
        assert kept["address"] == FIELDS["address"]
        assert kept["description"] == FIELDS["description"]
        assert kept["tags"] == FIELDS["tags"]
        assert kept["properties"] == FIELDS["properties"]
        assert body["location"]["latitude"] == FIELDS["location"]["latitude"], body
        # Six writes after the create: six versions, none lost.
        versions = sorted(r.json()["version"] for r in responses if r.json()["id"] == venue)
        assert len(set(versions)) == len(FIELDS)


async def test_a_patch_with_a_stale_base_version_is_a_conflict_and_changes_nothing(client, tenant):
    h = tenant.headers
    r = await client.post(f"{V1}/venues", headers=h, json={"name": "Depot"})
    venue, created = r.json()["id"], r.json()["version"]
    r = await client.patch(f"{V1}/venues/{venue}", headers=h, json={"address": "Dock 4"})
    assert r.status_code == 200, r.text
    stale = await client.patch(
        f"{V1}/venues/{venue}?base_version={created}", headers=h, json={"name": "Overwritten"}
    )
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["code"] == "version_conflict"
    assert stale.json()["error"]["details"] == {"current_version": r.json()["version"]}
    body = (await client.get(f"{V1}/venues/{venue}", headers=h)).json()
    assert (body["name"], body["address"]) == ("Depot", "Dock 4")
    gone = await client.patch(f"{V1}/venues/{uuid.uuid4()}", headers=h, json={"name": "x"})
    assert gone.status_code == 404, gone.text


async def _lock_waiters(pg) -> int:
    return int(
        await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


async def test_other_tenants_are_served_while_one_has_50_pushes_queued(
    app: FastAPI, client: httpx.AsyncClient, make_tenant, pg, test_database_url
):
    import asyncpg

    busy: Tenant = await make_tenant("busy")
    other: Tenant = await make_tenant("other")
    r = await client.post(
        f"{V1}/auth/workstations/register", json={"name": "ws"}, headers=busy.headers
    )
    ws_id, ws_headers = r.json()["id"], {"X-API-Key": r.json()["api_key"]}
    resources = app.state.resources
    pool = resources.engine.sync_engine.pool
    pool_max = 2 * app.state.settings.database_pool_size  # relational/database.py: overflow = size

    # Hold the busy tenant's counter row, as a long push of its own would.
    holder = await asyncpg.connect(test_database_url.replace("postgresql+asyncpg", "postgresql"))
    lock = holder.transaction()
    await lock.start()
    pushes: list[asyncio.Task[httpx.Response]] = []
    try:
        await holder.execute(
            "SELECT version FROM customer_versions WHERE customer_id = $1 FOR UPDATE",
            uuid.UUID(busy.id),
        )

        async def one_push(n: int) -> httpx.Response:
            mutation = {
                "mutation_id": n + 1,
                "type": "venue",
                "id": str(uuid.uuid4()),
                "op": "upsert",
                "base_version": 0,
                "data": {"name": f"Queued {n}"},
            }
            return await client.post(
                f"{V1}/sync/push",
                headers=ws_headers,
                json={"workstation_id": ws_id, "protocol_version": 1, "mutations": [mutation]},
                timeout=120,
            )

        pushes = [asyncio.create_task(one_push(n)) for n in range(50)]
        # Wait until every push is queued: each one waits for the lock, waits in
        # the tenant gate, or (the failure this guards against) the pool is gone.
        for _ in range(1200):
            waiters = await _lock_waiters(pg)
            queued = waiters + gate_of(resources).waiting(uuid.UUID(busy.id))
            if waiters and (queued >= len(pushes) or pool.checkedout() >= pool_max):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the pushes never queued: {waiters} waiting for the lock")
        assert not any(p.done() for p in pushes)

        # The other tenant reads and writes while the busy one's 50 pushes wait.
        created = await client.post(f"{V1}/venues", headers=other.headers, json={"name": "Free"})
        assert created.status_code == 201, created.text
        listed = await client.get(f"{V1}/venues", headers=other.headers)
        assert listed.status_code == 200, listed.text
        assert [v["name"] for v in listed.json()["items"]] == ["Free"]
        assert not any(p.done() for p in pushes)  # they really were still queued
    finally:
        await lock.rollback()
        await holder.close()
        done = await asyncio.gather(*pushes, return_exceptions=True)
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in done), done


async def test_a_write_queued_too_long_is_a_503_that_records_nothing(
    app: FastAPI, client: httpx.AsyncClient, make_tenant, pg, monkeypatch
):
    busy: Tenant = await make_tenant("busy")
    other: Tenant = await make_tenant("other")
    gate = gate_of(app.state.resources)
    monkeypatch.setattr(gate, "wait_seconds", 0.2)
    before = await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1", uuid.UUID(busy.id)
    )
    async with contextlib.AsyncExitStack() as held:  # every slot of the busy tenant taken
        for _ in range(gate.limit):
            await held.enter_async_context(gate.admitted(uuid.UUID(busy.id)))
        refused = await asyncio.wait_for(
            client.post(f"{V1}/venues", headers=busy.headers, json={"name": "Late"}), 30
        )
        served = await client.post(f"{V1}/venues", headers=other.headers, json={"name": "Free"})
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "tenant_busy"
    assert refused.headers["retry-after"] == "1"
    assert served.status_code == 201, served.text
    after = await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1", uuid.UUID(busy.id)
    )
    assert after == before
    assert gate.waiting(uuid.UUID(busy.id)) == 0 and uuid.UUID(busy.id) not in gate._queues
    ok = await client.post(f"{V1}/venues", headers=busy.headers, json={"name": "On time"})
    assert ok.status_code == 201, ok.text
