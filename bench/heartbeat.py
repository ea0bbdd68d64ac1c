"""Heartbeat ingest: the API against raw asyncpg inserts of the same rows.

API: CLIENTS concurrent HTTP clients (one per drone, each with the drone's own
device key) send REQUESTS heartbeats in all to `POST /drones/{serial}/heartbeat`
on a real uvicorn server: authentication, validation, one statement that
inserts the heartbeat, stores it on the drone row and checks for a liveness
transition, then commit.
Raw: CLIENTS asyncpg connections insert the same number of rows of the same
shape into `heartbeats`, one autocommitted INSERT each, nothing else.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx

from bench.harness import BenchContext, Result, percentile

CLIENTS = 32
REQUESTS = 5024  # 157 per client
WARMUP_PER_CLIENT = 5

BEAT = {
    "cpu_percent": 23.5,
    "memory_percent": 41.0,
    "disk_percent": 62.0,
    "temperature_c": 48.0,
    "battery_percent": 87.0,
    "firmware_version": "2.4.1",
    "status": "healthy",
    "uptime_seconds": 3600,
    "ip": "10.20.0.14",
}

RAW_INSERT = (
    "INSERT INTO heartbeats (customer_id, drone_id, received_at, cpu_percent, memory_percent, "
    "disk_percent, temperature_c, battery_percent, firmware_version, status, uptime_seconds, ip)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)


async def _fleet(ctx: BenchContext, base: str, key: str) -> list[tuple[str, str]]:
    """A claimed kit of CLIENTS drones; returns (serial, device key) per drone."""
    kit = f"BENCH-K-{uuid.uuid4().hex[:8]}"
    serials = [f"BENCH-D-{uuid.uuid4().hex[:10]}" for _ in range(CLIENTS)]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post(
            "/api/v1/admin/kits",
            headers={"X-API-Key": ctx.admin_key},
            json={"serial": kit, "drones": [{"serial": s} for s in serials]},
        )
        r.raise_for_status()
        (
            await client.post(f"/api/v1/kits/{kit}/claim", headers={"X-API-Key": key})
        ).raise_for_status()
        keys = []
        for serial in serials:
            r = await client.post(
                "/api/v1/auth/keys",
                headers={"X-API-Key": key},
                json={"name": f"drone {serial}", "scope": "device", "device_serial": serial},
            )
            r.raise_for_status()
            keys.append(r.json()["api_key"])
    return list(zip(serials, keys, strict=True))


async def _api_run(base: str, fleet: list[tuple[str, str]]) -> tuple[float, list[float]]:
    per_client = REQUESTS // CLIENTS
    latencies: list[float] = []

    async def drone(serial: str, key: str, count: int, record: bool) -> None:
        url = f"/api/v1/drones/{serial}/heartbeat"
        async with httpx.AsyncClient(
            base_url=base, headers={"X-API-Key": key}, timeout=60
        ) as client:
            for _ in range(count):
                started = time.perf_counter()
                response = await client.post(url, json=BEAT)
                elapsed = time.perf_counter() - started
                if response.status_code != 201:
                    raise RuntimeError(f"heartbeat refused: {response.text}")
                if record:
                    latencies.append(elapsed)

    await asyncio.gather(*(drone(s, k, WARMUP_PER_CLIENT, False) for s, k in fleet))
    started = time.perf_counter()
    await asyncio.gather(*(drone(s, k, per_client, True) for s, k in fleet))
    return time.perf_counter() - started, latencies


async def _raw_run(
    ctx: BenchContext, customer_id: uuid.UUID, drone_ids: list[uuid.UUID]
) -> tuple[float, list[float]]:
    per_client = REQUESTS // CLIENTS
    latencies: list[float] = []
    conns = [await ctx.pg() for _ in range(CLIENTS)]

    async def drone(
        conn: asyncpg.Connection, drone_id: uuid.UUID, count: int, record: bool
    ) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await conn.execute(
                RAW_INSERT,
                customer_id,
                drone_id,
                datetime.now(UTC),
                BEAT["cpu_percent"],
                BEAT["memory_percent"],
                BEAT["disk_percent"],
                BEAT["temperature_c"],
                BEAT["battery_percent"],
                BEAT["firmware_version"],
                BEAT["status"],
                BEAT["uptime_seconds"],
                BEAT["ip"],
            )
            if record:
                latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(
            *(drone(c, d, WARMUP_PER_CLIENT, False) for c, d in zip(conns, drone_ids, strict=True))
        )
        started = time.perf_counter()
        await asyncio.gather(
            *(drone(c, d, per_client, True) for c, d in zip(conns, drone_ids, strict=True))
        )
        return time.perf_counter() - started, latencies
    finally:
        for conn in conns:
            await conn.close()


async def run(ctx: BenchContext) -> list[Result]:
    async with ctx.server() as base:
        customer_id, key = await ctx.new_tenant(base, "heartbeat-bench")
        fleet = await _fleet(ctx, base, key)
        api_seconds, api_latencies = await _api_run(base, fleet)

    conn = await ctx.pg()
    try:
        rows = await conn.fetch(
            "SELECT id FROM drones WHERE customer_id = $1::uuid ORDER BY serial", customer_id
        )
        stored = await conn.fetchval(
            "SELECT count(*) FROM heartbeats WHERE customer_id = $1::uuid", customer_id
        )
    finally:
        await conn.close()
    expected = CLIENTS * (WARMUP_PER_CLIENT + REQUESTS // CLIENTS)
    assert stored == expected, f"{stored} heartbeats stored, {expected} sent"
    raw_seconds, raw_latencies = await _raw_run(
        ctx, uuid.UUID(customer_id), [r["id"] for r in rows]
    )

    graph = ctx.graph()
    try:
        await ctx.clear_graph(graph, customer_id)
    finally:
        await graph.close()

    sent = len(api_latencies)
    api_rps, raw_rps = sent / api_seconds, len(raw_latencies) / raw_seconds
    api_p99 = percentile(api_latencies, 99) * 1000
    raw_p99 = percentile(raw_latencies, 99) * 1000
    return [
        Result(
            f"heartbeat ingest, {CLIENTS} concurrent clients",
            "requests/s (higher is better)",
            api=api_rps,
            raw=raw_rps,
            notes={
                "requests": sent,
                "api_p99_ms": round(api_p99, 2),
                "raw_p99_ms": round(raw_p99, 2),
                "ratio": f"{api_rps / raw_rps:.2f}",
            },
        ),
        Result(
            "heartbeat p99 latency",
            "ms (lower is better)",
            api=api_p99,
            raw=raw_p99,
            notes={
                "api_p50_ms": round(percentile(api_latencies, 50) * 1000, 2),
                "raw_p50_ms": round(percentile(raw_latencies, 50) * 1000, 2),
            },
        ),
    ]
