"""Sync throughput: push, pull and bootstrap through the API against raw drivers.

- push: `POST /sync/push` with 500 world-node mutations per call, against the
  raw drivers doing the same writes (the journal and entity-state inserts in
  Postgres, the same `UNWIND`/`MERGE` in Neo4j). Calls alternate.
- pull: `GET /sync/pull` pages of 5,000, against asyncpg reading the same
  rows of `sync_entities` in the same pages.
- bootstrap: the NDJSON stream of a tenant of 100,000 entities, against an
  asyncpg cursor over the same rows; the API server's resident memory is
  sampled during the stream, at 20,000 and at 100,000 entities, to show it
  stays flat as the size grows. Bootstrap tenants are seeded straight into
  `sync_entities` (bootstrap reads nothing else).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx

from bench.harness import BenchContext, Result, rss_bytes
from graph.projection import WORLD_NODE_UPSERT, GraphChange, to_row

BATCH = 500
PUSH_BATCHES = 12
PULL_PAGE = 5000
BOOTSTRAP_SIZES = (20_000, 100_000)


def _node(venue_id: str, i: int) -> dict:
    return {
        "venue_id": venue_id,
        "kind": "Zone",
        "name": f"Zone {i}",
        "description": "seating block",
        "position": {"x": float(i % 100), "y": 1.0, "z": 0.0},
        "properties": {"capacity": i % 500},
    }


async def _push(ctx: BenchContext, base: str) -> tuple[Result, str, dict[str, str]]:
    customer_id, key = await ctx.new_tenant(base, "sync-push")
    headers = {"X-API-Key": key}
    graph = ctx.graph()
    pg = await ctx.pg()
    raw_tenant = uuid.uuid4()
    await pg.execute("INSERT INTO customers (id, name) VALUES ($1, 'raw')", raw_tenant)
    raw_venue = str(uuid.uuid4())
    await graph.write(
        "bench.venue",
        "CREATE (:Venue {id: $id, customer_id: $c, version: 1})",
        {"id": raw_venue, "c": str(raw_tenant)},
    )
    api_s = raw_s = 0.0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        registered = (
            await client.post("/api/v1/auth/workstations/register", json={"name": "bench"})
        ).json()
        ws = registered["id"]
        # Only a workstation's own key pushes (docs/sync.md, "Who may push").
        ws_headers = {"X-API-Key": registered["api_key"]}
        venue = str(uuid.uuid4())
        await client.post(
            "/api/v1/sync/push",
            headers=ws_headers,
            json={
                "workstation_id": ws,
                "protocol_version": 1,
                "mutations": [
                    {
                        "mutation_id": 1,
                        "type": "venue",
                        "id": venue,
                        "op": "upsert",
                        "base_version": 0,
                        "data": {"name": "Bench stadium"},
                    }
                ],
            },
        )
        mid, version = 2, 2
        for batch in range(-2, PUSH_BATCHES):
            mutations = []
            for _ in range(BATCH):
                mutations.append(
                    {
                        "mutation_id": mid,
                        "type": "world_node",
                        "id": str(uuid.uuid4()),
                        "op": "upsert",
                        "base_version": 0,
                        "data": _node(venue, mid),
                    }
                )
                mid += 1
            raw_rows, journal = [], []
            for k in range(BATCH):
                node_id, data = str(uuid.uuid4()), _node(raw_venue, k)
                raw_rows.append(
                    to_row(
                        GraphChange("world_node", node_id, "upsert", version, str(raw_tenant), data)
                    )
                )
                journal.append(
                    (
                        raw_tenant,
                        version,
                        "world_node",
                        uuid.UUID(node_id),
                        "upsert",
                        json.dumps(data),
                    )
                )
                version += 1
            started = time.perf_counter()
            r = await client.post(
                "/api/v1/sync/push",
                headers=ws_headers,
                json={"workstation_id": ws, "protocol_version": 1, "mutations": mutations},
            )
            r.raise_for_status()
            middle = time.perf_counter()
            async with pg.transaction():
                await pg.executemany(
                    "INSERT INTO sync_journal (customer_id, version, entity_type, entity_id, op, "
                    "payload, state) VALUES ($1, $2, $3, $4, $5, $6::jsonb, 'pending')",
                    journal,
                )
                await pg.executemany(
                    "INSERT INTO sync_entities (customer_id, version, entity_type, entity_id, "
                    "deleted, payload) VALUES ($1, $2, $3, $4, $5 = 'delete', $6::jsonb)",
                    journal,
                )
            await graph.write("bench.raw_push", WORLD_NODE_UPSERT, {"rows": raw_rows})
            await pg.execute(
                "UPDATE sync_journal SET state = 'applied' WHERE customer_id = $1 "
                "AND state = 'pending'",
                raw_tenant,
            )
            ended = time.perf_counter()
            if batch >= 0:
                api_s += middle - started
                raw_s += ended - middle
    await ctx.clear_graph(graph, customer_id, str(raw_tenant))
    await graph.close()
    await pg.close()
    total = BATCH * PUSH_BATCHES
    return (
        Result(
            "sync push, 500 mutations per call",
            "entities/s",
            api=total / api_s,
            raw=total / raw_s,
            notes={"entities": total, "target_ratio": ">=0.5"},
        ),
        customer_id,
        headers,
    )


async def _pull(ctx: BenchContext, base: str, customer_id: str, headers: dict[str, str]) -> Result:
    pg = await ctx.pg()
    api_s = raw_s = 0.0
    count = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        for round_ in range(8):  # the first round warms caches and is not counted
            cursor, raw_cursor = 0, 0
            started = time.perf_counter()
            while True:
                page = (
                    await client.get(
                        "/api/v1/sync/pull", params={"since": cursor, "limit": PULL_PAGE}
                    )
                ).json()
                cursor = page["cursor"]
                n = len(page["changes"])
                if not page["has_more"]:
                    break
            api_time = time.perf_counter() - started
            started = time.perf_counter()
            rows = 1
            total = 0
            while rows:
                records = await pg.fetch(
                    "SELECT entity_type, entity_id, version, deleted, payload, merged_into, "
                    "updated_by, updated_at FROM sync_entities WHERE customer_id = $1 "
                    "AND version > $2 ORDER BY version LIMIT $3",
                    uuid.UUID(customer_id),
                    raw_cursor,
                    PULL_PAGE,
                )
                rows = len(records)
                total += rows
                if records:
                    raw_cursor = records[-1]["version"]
                    _ = [json.loads(r["payload"]) for r in records]
            raw_time = time.perf_counter() - started
            if round_ > 0:
                api_s += api_time
                raw_s += raw_time
                count += total
            del n
    await pg.close()
    return Result(
        "sync pull, pages of 5,000",
        "entities/s",
        api=count / api_s,
        raw=count / raw_s,
        notes={"entities": count, "target_ratio": ">=0.5"},
    )


async def _seed(ctx: BenchContext, customer_id: str, size: int) -> None:
    pg = await ctx.pg()
    venue = uuid.uuid4()
    rows = [(uuid.UUID(customer_id), "venue", venue, 1, json.dumps({"name": "Big venue"}))]
    rows += [
        (
            uuid.UUID(customer_id),
            "world_node",
            uuid.uuid4(),
            i + 2,
            json.dumps(_node(str(venue), i) | {"name": f"Seat block {i}"}),
        )
        for i in range(size - 1)
    ]
    await pg.copy_records_to_table(
        "sync_entities",
        records=[(c, t, e, v, False, p) for c, t, e, v, p in rows],
        columns=["customer_id", "entity_type", "entity_id", "version", "deleted", "payload"],
    )
    await pg.execute(
        "UPDATE customer_versions SET version = $2 WHERE customer_id = $1",
        uuid.UUID(customer_id),
        size + 1,
    )
    await pg.close()


async def _bootstrap(ctx: BenchContext) -> list[Result]:
    """Each size gets a fresh server, so its memory growth is its own."""
    results = []
    peaks = {}
    for size in BOOTSTRAP_SIZES:
        async with ctx.server() as base:
            results.append(await _bootstrap_one(ctx, base, size, peaks))
    small, large = BOOTSTRAP_SIZES
    results.append(
        Result(
            "bootstrap memory growth, 100k vs 20k",
            "MB / MB",
            api=peaks[large],
            raw=max(peaks[small], 0.1),
            notes={"flat_if_ratio_near": "1 (not 5)"},
        )
    )
    return results


async def _bootstrap_one(
    ctx: BenchContext, base: str, size: int, peaks: dict[int, float]
) -> Result:
    customer_id, key = await ctx.new_tenant(base, f"boot-{size}")
    await _seed(ctx, customer_id, size)
    assert ctx.server_pid is not None
    baseline = rss_bytes(ctx.server_pid)
    peak = baseline
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_bytes(ctx.server_pid))  # type: ignore[arg-type]
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    lines = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=600) as client:
        async with client.stream("GET", "/api/v1/sync/bootstrap") as response:
            async for _ in response.aiter_lines():
                lines += 1
    api_time = time.perf_counter() - started
    stop.set()
    await sampler
    pg = await ctx.pg()
    started = time.perf_counter()
    raw = 0
    async with pg.transaction():
        async for record in pg.cursor(
            "SELECT entity_type, entity_id, version, payload, updated_by, updated_at "
            "FROM sync_entities WHERE customer_id = $1 AND NOT deleted "
            "ORDER BY entity_type, entity_id",
            uuid.UUID(customer_id),
            prefetch=1000,
        ):
            json.loads(record["payload"])
            raw += 1
    raw_time = time.perf_counter() - started
    await pg.close()
    assert lines - 2 == size == raw, (lines, size, raw)
    growth_mb = (peak - baseline) / 2**20
    peaks[size] = growth_mb
    return Result(
        f"sync bootstrap, {size:,} entities",
        "entities/s",
        api=size / api_time,
        raw=size / raw_time,
        notes={
            "server_rss_growth_mb": round(growth_mb, 1),
            "server_rss_peak_mb": round(peak / 2**20, 1),
        },
    )


async def run(ctx: BenchContext) -> list[Result]:
    async with ctx.server() as base:
        push_result, customer_id, headers = await _push(ctx, base)
        pull_result = await _pull(ctx, base, customer_id, headers)
    boot = await _bootstrap(ctx)
    return [push_result, pull_result, *boot]
