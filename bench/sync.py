"""Sync throughput: push, pull and bootstrap through the API against raw drivers.

- push: `POST /sync/push` with 500 world-node mutations per call, against the
  raw drivers doing the same writes (the journal and entity-state inserts in
  Postgres, the same `UNWIND`/`MERGE` in Neo4j). Calls alternate.
- pull: `GET /sync/pull` pages of 5,000, against asyncpg reading the same
  rows of `sync_entities` in the same pages, reported twice from alternated
  rounds: neither side decoding (the server's figure, with the target: the
  API side parses each page's tail only) and both decoding with orjson (the
  page's JSON on the API side, every payload on the raw side); bytes/s is
  reported beside entities/s. The API side reads pages with `_PageClient`
  (HTTP/1.1 keep-alive on a plain socket, each response received straight
  into one buffer allocated once), not httpx: timed on one 1.8 MB page of
  5,000, httpx took 26-29 ms to fetch it where this client (then on asyncio
  streams) and curl took 21-23 ms, i.e. httpx's receive path (h11,
  chunked Python-level reads) was 15-20% of the page and charged the client's
  cost to the server. orjson decoding of the page is ~8-10 ms on either side.
- bootstrap: the NDJSON stream of a tenant of SCALE entities, against an
  asyncpg cursor over the same rows (neither side decodes the JSON); the API
  server's resident memory is sampled during the stream, at SCALE/5 and at
  SCALE entities, to show it stays flat as the size grows. Bootstrap tenants
  are seeded straight into `sync_entities` (bootstrap and pull read nothing
  else).
- catch-up pull: the SCALE tenant pulled from version 0 to its head in pages
  of 5,000 (a workstation catching up on every change), against asyncpg
  reading the same pages; the server's memory growth is sampled too.

SCALE is 100,000 unless the environment sets OVERWATCH_BENCH_SCALE (for
example `OVERWATCH_BENCH_SCALE=1000000 make bench BENCH_ARGS=sync` for the
one-million-entity figures; seeding them takes a minute or two).
"""

from __future__ import annotations

import json
import statistics
import time
import uuid

import asyncpg
import httpx
import orjson

from bench.harness import BenchContext, Result, quiet_collector
from bench.sync_bootstrap import _bootstrap
from bench.sync_common import BATCH, PUSH_BATCHES, _node, _PageClient, _pull_pages, _raw_pages
from graph.projection import WORLD_NODE_UPSERT, GraphChange, to_row


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
            # Both sides prepare their input before the clock starts: the
            # request body is encoded here, the raw rows just above.
            body = orjson.dumps(
                {"workstation_id": ws, "protocol_version": 1, "mutations": mutations}
            )
            started = time.perf_counter()
            r = await client.post(
                "/api/v1/sync/push",
                headers={**ws_headers, "Content-Type": "application/json"},
                content=body,
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
            await pg.execute(  # applied through the batch's last version (migration 0019)
                "INSERT INTO journal_applied (customer_id, through) VALUES ($1, $2) "
                "ON CONFLICT (customer_id) DO UPDATE SET through = EXCLUDED.through",
                raw_tenant,
                version - 1,
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
            notes={"entities": total, "target_ratio": ">=0.8"},
        ),
        customer_id,
        headers,
    )


PULL_ROUNDS = 30  # each a whole catch-up of the tenant (two pages), per side and mode


async def _api_round(client: _PageClient, decode: bool) -> tuple[float, int, int, int]:
    with quiet_collector():
        started = time.perf_counter()
        pulled, pulled_bytes, cursor = await _pull_pages(client, decode=decode)
        return time.perf_counter() - started, pulled, pulled_bytes, cursor


async def _raw_round(pg: asyncpg.Connection, customer_id: str, decode: bool) -> tuple[float, int]:
    with quiet_collector():
        started = time.perf_counter()
        total = await _raw_pages(pg, customer_id, decode=decode)
        return time.perf_counter() - started, total


async def _pull(
    ctx: BenchContext, base: str, customer_id: str, headers: dict[str, str]
) -> list[Result]:
    """Two figures from alternated rounds: both sides decoding what they read,
    and neither decoding (the server's work alone, as the bootstrap figure).

    Each side goes first every other round, and each figure is the ratio of
    the median rounds: a round is ~10-20 ms, so one stray pause (a
    checkpoint, a JVM or Python collection) moved a ratio of sums over the
    seven rounds this used to take by as much as 0.2 between runs."""
    pg = await ctx.pg()
    api_s: dict[bool, list[float]] = {True: [], False: []}
    raw_s: dict[bool, list[float]] = {True: [], False: []}
    count = {True: 0, False: 0}
    size = {True: 0, False: 0}
    async with _PageClient(base, headers) as client:
        for round_ in range(-1, PULL_ROUNDS):  # the first round warms caches
            for decode in (True, False):
                if round_ % 2:
                    raw_time, total = await _raw_round(pg, customer_id, decode)
                    api_time, pulled, pulled_bytes, cursor = await _api_round(client, decode)
                else:
                    api_time, pulled, pulled_bytes, cursor = await _api_round(client, decode)
                    raw_time, total = await _raw_round(pg, customer_id, decode)
                assert pulled == total or not decode, (pulled, total)
                if round_ >= 0:
                    api_s[decode].append(api_time)
                    raw_s[decode].append(raw_time)
                    count[decode] = total
                    size[decode] = pulled_bytes
    head = await pg.fetchval(
        "SELECT version FROM customer_versions WHERE customer_id = $1", uuid.UUID(customer_id)
    )
    assert cursor == head, (cursor, head)
    await pg.close()
    # The server's figure is the undecoded one (the issue asks pull's figure to
    # measure the server, not the client's JSON decoding); the decoded one adds
    # each side's client work, which differs (whole envelopes against payloads).
    results = []
    for decode in (False, True):
        api_round = statistics.median(api_s[decode])
        results.append(
            Result(
                "sync pull, pages of 5,000"
                + (
                    ", both sides decoding (client included)"
                    if decode
                    else ", neither side decoding"
                )
                + " (median round)",
                "entities/s",
                api=count[decode] / api_round,
                raw=count[decode] / statistics.median(raw_s[decode]),
                notes={
                    "entities_per_round": count[decode],
                    "rounds": PULL_ROUNDS,
                    "api_MB_per_s": round(size[decode] / api_round / 2**20, 1),
                    "mean_ratio": round(sum(raw_s[decode]) / sum(api_s[decode]), 2),
                    **({"measures": "server+client"} if decode else {"target_ratio": ">=0.8"}),
                },
            )
        )
    return results


async def run(ctx: BenchContext) -> list[Result]:
    async with ctx.server() as base:
        push_result, customer_id, headers = await _push(ctx, base)
        pull_results = await _pull(ctx, base, customer_id, headers)
    boot = await _bootstrap(ctx)
    return [push_result, *pull_results, *boot]
