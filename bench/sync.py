"""Sync throughput: push, pull and bootstrap through the API against raw drivers.

- push: `POST /sync/push` with 500 world-node mutations per call, against the
  raw drivers doing the same writes (the journal and entity-state inserts in
  Postgres, the same `UNWIND`/`MERGE` in Neo4j). Calls alternate.
- pull: `GET /sync/pull` pages of 5,000, against asyncpg reading the same
  rows of `sync_entities` in the same pages. Both sides decode with orjson
  (the page's JSON on the API side, every payload on the raw side); bytes/s
  is reported beside entities/s. The API side reads pages with `_PageClient`
  (HTTP/1.1 keep-alive on asyncio streams, the body in one `readexactly`),
  not httpx: timed on one 1.8 MB page of 5,000, httpx took 26-29 ms to fetch
  it where this client and curl took 21-23 ms, i.e. httpx's receive path (h11,
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

import asyncio
import json
import os
import time
import uuid

import asyncpg
import httpx
import orjson

from bench.harness import BenchContext, Result, rss_bytes
from graph.projection import WORLD_NODE_UPSERT, GraphChange, to_row

BATCH = 500
PUSH_BATCHES = 12
PULL_PAGE = 5000
SCALE = int(os.environ.get("OVERWATCH_BENCH_SCALE", "100000"))
BOOTSTRAP_SIZES = (SCALE // 5, SCALE)


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
            notes={"entities": total, "target_ratio": ">=0.8"},
        ),
        customer_id,
        headers,
    )


class _PageClient:
    """A minimal HTTP/1.1 keep-alive GET client for the pull pages: one
    connection, the response head read up to its blank line and the body in
    one `readexactly(Content-Length)`. Faster than the server, so the pull
    figure is the server's (see the module docstring); it handles only what
    the pull endpoint answers (a Content-Length body, no chunking)."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port or 80)
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> _PageClient:
        self._streams = await asyncio.open_connection(self.host, self.port, limit=2**22)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._streams is not None
        self._streams[1].close()
        await self._streams[1].wait_closed()

    async def get(self, path: str) -> bytes:
        assert self._streams is not None
        reader, writer = self._streams
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}\r\n".encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in head[1:] if line)
        }
        body = await reader.readexactly(int(fields["content-length"]))
        status = int(head[0].split()[1])
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return body


async def _pull_pages(client: _PageClient) -> tuple[int, int]:
    """Pull from version 0 to the head; returns (changes, body bytes)."""
    cursor, count, size = 0, 0, 0
    while True:
        body = await client.get(f"/api/v1/sync/pull?since={cursor}&limit={PULL_PAGE}")
        size += len(body)
        page = orjson.loads(body)
        cursor = page["cursor"]
        count += len(page["changes"])
        if not page["has_more"]:
            return count, size


async def _raw_pages(pg: asyncpg.Connection, customer_id: str) -> int:
    """The same pages straight from `sync_entities` with asyncpg."""
    raw_cursor, total = 0, 0
    while True:
        records = await pg.fetch(
            "SELECT entity_type, entity_id, version, deleted, payload, merged_into, "
            "updated_by, updated_at FROM sync_entities WHERE customer_id = $1 "
            "AND version > $2 ORDER BY version LIMIT $3",
            uuid.UUID(customer_id),
            raw_cursor,
            PULL_PAGE,
        )
        if not records:
            return total
        total += len(records)
        raw_cursor = records[-1]["version"]
        _ = [orjson.loads(r["payload"]) for r in records]


async def _pull(ctx: BenchContext, base: str, customer_id: str, headers: dict[str, str]) -> Result:
    pg = await ctx.pg()
    api_s = raw_s = 0.0
    count = size = 0
    async with _PageClient(base, headers) as client:
        for round_ in range(8):  # the first round warms caches and is not counted
            started = time.perf_counter()
            pulled, pulled_bytes = await _pull_pages(client)
            api_time = time.perf_counter() - started
            started = time.perf_counter()
            total = await _raw_pages(pg, customer_id)
            raw_time = time.perf_counter() - started
            assert pulled == total, (pulled, total)
            if round_ > 0:
                api_s += api_time
                raw_s += raw_time
                count += total
                size += pulled_bytes
    await pg.close()
    return Result(
        "sync pull, pages of 5,000",
        "entities/s",
        api=count / api_s,
        raw=count / raw_s,
        notes={
            "entities": count,
            "api_MB_per_s": round(size / api_s / 2**20, 1),
            "target_ratio": ">=0.8",
        },
    )


SEED_CHUNK = 50_000


async def _seed(ctx: BenchContext, customer_id: str, size: int) -> None:
    """`size` live entities (a venue and its nodes), versions 1..size, in chunks."""
    pg = await ctx.pg()
    tenant = uuid.UUID(customer_id)
    venue = uuid.uuid4()
    try:
        for start in range(0, size, SEED_CHUNK):
            records = []
            for i in range(start, min(size, start + SEED_CHUNK)):
                if i == 0:
                    records.append((tenant, "venue", venue, 1, False, '{"name": "Big venue"}'))
                    continue
                data = _node(str(venue), i - 1) | {"name": f"Seat block {i - 1}"}
                records.append(
                    (tenant, "world_node", uuid.uuid4(), i + 1, False, orjson.dumps(data).decode())
                )
            await pg.copy_records_to_table(
                "sync_entities",
                records=records,
                columns=[
                    "customer_id",
                    "entity_type",
                    "entity_id",
                    "version",
                    "deleted",
                    "payload",
                ],
            )
        await pg.execute(
            "UPDATE customer_versions SET version = $2 WHERE customer_id = $1", tenant, size + 1
        )
        await pg.execute("ANALYZE sync_entities")
    finally:
        await pg.close()


async def _bootstrap(ctx: BenchContext) -> list[Result]:
    """Each size gets a fresh server, so its memory growth is its own; the
    largest tenant is then also pulled from version 0 (catch-up)."""
    results = []
    peaks: dict[int, float] = {}
    for size in BOOTSTRAP_SIZES:
        async with ctx.server() as base:
            result, customer_id, key = await _bootstrap_one(ctx, base, size, peaks)
            results.append(result)
            if size == SCALE:
                results.append(await _catch_up(ctx, base, customer_id, key, size))
    small, large = BOOTSTRAP_SIZES
    results.append(
        Result(
            f"bootstrap memory growth, {large:,} vs {small:,}",
            "MB / MB",
            api=peaks[large],
            raw=max(peaks[small], 0.1),
            notes={"flat_if_ratio_near": "1 (not 5)"},
        )
    )
    return results


class _Sampler:
    """Peak resident memory of the API server while a block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.peak = rss_bytes(pid)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> _Sampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


async def _catch_up(ctx: BenchContext, base: str, customer_id: str, key: str, size: int) -> Result:
    """Every change of a tenant of `size` entities, pulled from version 0."""
    assert ctx.server_pid is not None
    async with _PageClient(base, {"X-API-Key": key}) as client:
        async with _Sampler(ctx.server_pid) as memory:
            started = time.perf_counter()
            pulled, pulled_bytes = await _pull_pages(client)
            api_time = time.perf_counter() - started
    pg = await ctx.pg()
    try:
        started = time.perf_counter()
        raw = await _raw_pages(pg, customer_id)
        raw_time = time.perf_counter() - started
    finally:
        await pg.close()
    assert pulled == raw == size, (pulled, raw, size)
    return Result(
        f"catch-up pull, {size:,} changes from version 0",
        "entities/s",
        api=size / api_time,
        raw=size / raw_time,
        notes={
            "api_seconds": round(api_time, 1),
            "raw_seconds": round(raw_time, 1),
            "api_MB_per_s": round(pulled_bytes / api_time / 2**20, 1),
            "server_rss_growth_mb": round(memory.growth_mb, 1),
            "target": "<=60 s",
        },
    )


async def _bootstrap_one(
    ctx: BenchContext, base: str, size: int, peaks: dict[int, float]
) -> tuple[Result, str, str]:
    customer_id, key = await ctx.new_tenant(base, f"boot-{size}")
    await _seed(ctx, customer_id, size)
    assert ctx.server_pid is not None
    lines = 0
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=600) as client:
        async with _Sampler(ctx.server_pid) as memory:
            started = time.perf_counter()
            # Lines are counted in the raw bytes and not decoded, and the raw
            # side does not decode its payloads either: the figure is the
            # server's streaming, not the client's parsing.
            async with client.stream("GET", "/api/v1/sync/bootstrap") as response:
                async for chunk in response.aiter_raw():
                    lines += chunk.count(b"\n")
            api_time = time.perf_counter() - started
    pg = await ctx.pg()
    started = time.perf_counter()
    raw = 0
    async with pg.transaction():
        async for _record in pg.cursor(
            "SELECT entity_type, entity_id, version, payload, updated_by, updated_at "
            "FROM sync_entities WHERE customer_id = $1 AND NOT deleted "
            "ORDER BY entity_type, entity_id",
            uuid.UUID(customer_id),
            prefetch=1000,
        ):
            raw += 1
    raw_time = time.perf_counter() - started
    await pg.close()
    assert lines - 2 == size == raw, (lines, size, raw)
    peaks[size] = memory.growth_mb
    result = Result(
        f"sync bootstrap, {size:,} entities",
        "entities/s",
        api=size / api_time,
        raw=size / raw_time,
        notes={
            "server_rss_growth_mb": round(memory.growth_mb, 1),
            "server_rss_peak_mb": round(memory.peak / 2**20, 1),
        },
    )
    return result, customer_id, key


async def run(ctx: BenchContext) -> list[Result]:
    async with ctx.server() as base:
        push_result, customer_id, headers = await _push(ctx, base)
        pull_result = await _pull(ctx, base, customer_id, headers)
    boot = await _bootstrap(ctx)
    return [push_result, pull_result, *boot]
