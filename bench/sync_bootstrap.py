"""The sync bench's bootstrap and catch-up rows: seeding tenants straight into
`sync_entities`, streaming them, and sampling the server's memory (bench/sync.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import orjson

from bench.harness import BenchContext, Result, quiet_collector, rss_bytes
from bench.sync_common import BOOTSTRAP_SIZES, SCALE, _node, _PageClient, _pull_pages, _raw_pages

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
            with quiet_collector():
                started = time.perf_counter()
                pulled, pulled_bytes, _ = await _pull_pages(client)
                api_time = time.perf_counter() - started
    pg = await ctx.pg()
    try:
        with quiet_collector():
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
