"""Streams: perception ingest throughput, and latency from ingest to a subscriber
on another API process.

Two real uvicorn API processes, A and B, share the database. A tenant has
ZONES zones, each watched by a camera.

1. Throughput: CONNECTIONS ingest sockets to A each send FRAMES_PER_CONNECTION
   frames as fast as the socket takes them (pipelined; the server keeps up to
   256 in flight per socket) and wait for every ack. A subscriber on B counts
   the occupancy events. Reported: acked frames/s, and delivered events/s at B.
   Raw: the same number of rows of the same shape inserted into
   `occupancy_history` by CONNECTIONS asyncpg connections, one autocommitted
   INSERT each, nothing else (no validation, no Neo4j, no NOTIFY); noted
   beside it, the same rows by `executemany` in chunks of 500 (what batching
   alone can reach).
2. Latency: one socket sends RATE frames/s for LATENCY_SECONDS; each frame's
   timestamp is its send time, so the subscriber on B measures ingest → commit
   → NOTIFY → B's LISTEN connection → B's socket. Ack latency (send → ack from
   A) is measured alongside.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.harness import BenchContext, Result, percentile

ZONES = 8
CONNECTIONS = 8
FRAMES_PER_CONNECTION = 5000
RATE = 200
LATENCY_SECONDS = 5
WARMUP_FRAMES = 50

RAW_INSERT = (
    "INSERT INTO occupancy_history (customer_id, zone_id, venue_id, camera_id, drone_serial, "
    "source, observed_at, people, free, occupied, detections, detail) "
    "VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, $11::jsonb)"
)


def _frame(camera: str, seq: int, at: datetime | None = None) -> str:
    return json.dumps(
        {
            "seq": seq,
            "camera": camera,
            "timestamp": (at or datetime.now(UTC)).isoformat(),
            "summary": {
                "total_people": seq % 40,
                "free": ["A1", "A2", "A3"],
                "occupied": ["B1", "B2"],
                "detections": [
                    {"class": "person", "confidence": 0.9, "bbox": [10 * k, 20, 10 * k + 40, 120]}
                    for k in range(5)
                ],
            },
        }
    )


async def _world(base: str, key: str) -> list[dict[str, str]]:
    h = {"X-API-Key": key}
    cameras = []
    async with httpx.AsyncClient(base_url=base + "/api/v1", headers=h, timeout=60) as c:
        venue = (await c.post("/venues", json={"name": "Bench Arena"})).json()["id"]
        for k in range(ZONES):
            zone = (
                await c.post(
                    "/world-model/nodes",
                    json={"venue_id": venue, "kind": "Zone", "name": f"Stand {k}"},
                )
            ).json()["id"]
            cam = (
                await c.post(
                    "/world-model/nodes",
                    json={
                        "venue_id": venue,
                        "kind": "Camera",
                        "name": f"Cam {k}",
                        "properties": {"external_id": f"cam-{k}"},
                    },
                )
            ).json()["id"]
            r = await c.post(
                "/world-model/edges",
                json={"venue_id": venue, "type": "OBSERVED_IN", "from_id": cam, "to_id": zone},
            )
            r.raise_for_status()
            cameras.append({"name": f"cam-{k}", "id": cam, "zone": zone, "venue": venue})
    return cameras


async def _socket(url: str, key: str) -> ClientConnection:
    url = url.replace("http://", "ws://", 1)
    return await connect(
        url, additional_headers={"X-API-Key": key}, proxy=None, compression=None, max_queue=None
    )


class Subscriber:
    """Counts occupancy events at B and records their delivery latency."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.count = 0
        self.latencies: list[float] = []
        self.recording = False
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.conn:
            now = time.time()
            event = json.loads(raw)
            if event["event"] == "ping":
                await self.conn.send('{"type":"pong"}')
            elif event["event"] == "occupancy":
                self.count += 1
                if self.recording:
                    self.latencies.append(now - datetime.fromisoformat(event["at"]).timestamp())

    async def wait_for(self, count: int, timeout: float = 120) -> float:
        deadline = time.perf_counter() + timeout
        while self.count < count:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"subscriber saw {self.count} of {count} events")
            await asyncio.sleep(0.005)
        return time.perf_counter()


async def _send_and_ack(
    conn: ClientConnection, camera: str, count: int, first_seq: int = 1
) -> None:
    async def send() -> None:
        for seq in range(first_seq, first_seq + count):
            await conn.send(_frame(camera, seq))

    async def acks() -> None:
        got = 0
        while got < count:
            message = json.loads(await conn.recv())
            if message["event"] == "ack":
                got += 1
            elif message["event"] != "ping":
                raise RuntimeError(f"frame refused: {message}")

    await asyncio.gather(send(), acks())


async def _throughput(
    a: str, key: str, cameras: list[dict[str, str]], subscriber: Subscriber
) -> tuple[float, float]:
    conns = [await _socket(a + "/api/v1/stream/ingest", key) for _ in range(CONNECTIONS)]
    for conn in conns:
        assert json.loads(await conn.recv())["event"] == "ready"
    await asyncio.gather(
        *(_send_and_ack(c, cameras[i % ZONES]["name"], WARMUP_FRAMES) for i, c in enumerate(conns))
    )
    seen = CONNECTIONS * WARMUP_FRAMES
    await subscriber.wait_for(seen)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _send_and_ack(c, cameras[i % ZONES]["name"], FRAMES_PER_CONNECTION, WARMUP_FRAMES + 1)
            for i, c in enumerate(conns)
        )
    )
    acked = time.perf_counter() - started
    delivered = await subscriber.wait_for(seen + CONNECTIONS * FRAMES_PER_CONNECTION) - started
    for conn in conns:
        await conn.close()
    return acked, delivered


async def _latency(
    a: str, key: str, camera: str, subscriber: Subscriber
) -> tuple[list[float], list[float]]:
    conn = await _socket(a + "/api/v1/stream/ingest", key)
    assert json.loads(await conn.recv())["event"] == "ready"
    sent_at: dict[int, float] = {}
    ack_latencies: list[float] = []
    total = RATE * LATENCY_SECONDS
    before = subscriber.count
    subscriber.recording = True

    async def send() -> None:
        started = time.perf_counter()
        for seq in range(1, total + 1):
            delay = started + seq / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[seq] = time.perf_counter()
            await conn.send(_frame(camera, seq))

    async def acks() -> None:
        got = 0
        while got < total:
            message = json.loads(await conn.recv())
            if message["event"] == "ack":
                ack_latencies.append(time.perf_counter() - sent_at[message["ack"]])
                got += 1

    await asyncio.gather(send(), acks())
    await subscriber.wait_for(before + total)
    subscriber.recording = False
    await conn.close()
    return ack_latencies, subscriber.latencies


async def _raw(
    ctx: BenchContext, customer_id: str, cameras: list[dict[str, str]], batch: int = 1
) -> float:
    """Seconds to insert the rows; `batch` > 1 sends them `executemany` in chunks."""
    conns = [await ctx.pg() for _ in range(CONNECTIONS)]
    detail = json.dumps(
        {
            "free": ["A1", "A2", "A3"],
            "occupied": ["B1", "B2"],
            "detections": [
                {"class": "person", "confidence": 0.9, "bbox": [10 * k, 20, 10 * k + 40, 120]}
                for k in range(5)
            ],
        }
    )
    customer = uuid.UUID(customer_id)

    async def writer(conn: asyncpg.Connection, cam: dict[str, str], count: int) -> None:
        zone, venue, cam_id = (uuid.UUID(cam[k]) for k in ("zone", "venue", "id"))
        if batch > 1:
            for first in range(0, count, batch):
                await conn.executemany(
                    RAW_INSERT,
                    [
                        (
                            customer,
                            zone,
                            venue,
                            cam_id,
                            cam["name"],
                            datetime.now(UTC),
                            seq % 40,
                            3,
                            2,
                            5,
                            detail,
                        )
                        for seq in range(first, min(count, first + batch))
                    ],
                )
            return
        for seq in range(count):
            await conn.execute(
                RAW_INSERT,
                customer,
                zone,
                venue,
                cam_id,
                cam["name"],
                datetime.now(UTC),
                seq % 40,
                3,
                2,
                5,
                detail,
            )

    try:
        await asyncio.gather(
            *(writer(c, cameras[i % ZONES], WARMUP_FRAMES) for i, c in enumerate(conns))
        )
        started = time.perf_counter()
        await asyncio.gather(
            *(writer(c, cameras[i % ZONES], FRAMES_PER_CONNECTION) for i, c in enumerate(conns))
        )
        return time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()


async def run(ctx: BenchContext) -> list[Result]:
    async with ctx.server() as a, ctx.server() as b:
        customer_id, key = await ctx.new_tenant(a, "streams-bench")
        cameras = await _world(a, key)
        sub = await _socket(b + "/api/v1/stream/subscribe", key)
        await sub.send(json.dumps({"subscribe": {"event_types": ["occupancy"]}}))
        assert json.loads(await sub.recv())["event"] == "subscribed"
        subscriber = Subscriber(sub)
        acked, delivered = await _throughput(a, key, cameras, subscriber)
        ack_latencies, e2e_latencies = await _latency(a, key, cameras[0]["name"], subscriber)
        subscriber.task.cancel()
        await sub.close()

    conn = await ctx.pg()
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM occupancy_history WHERE customer_id = $1::uuid", customer_id
        )
    finally:
        await conn.close()
    frames = CONNECTIONS * FRAMES_PER_CONNECTION
    expected = CONNECTIONS * WARMUP_FRAMES + frames + RATE * LATENCY_SECONDS
    assert stored == expected, f"{stored} occupancy rows stored, {expected} frames acked"
    raw_seconds = await _raw(ctx, customer_id, cameras)
    # The API writes in batches (group commit); this is the ceiling of that idea.
    raw_batched_seconds = await _raw(ctx, customer_id, cameras, batch=500)

    graph = ctx.graph()
    try:
        await ctx.clear_graph(graph, customer_id)
    finally:
        await graph.close()

    def ms(values: list[float], p: float) -> float:
        return round(percentile(values, p) * 1000, 2)

    api_fps, raw_fps = frames / acked, frames / raw_seconds
    return [
        Result(
            f"stream ingest, {CONNECTIONS} sockets to process A",
            "frames/s acked (higher is better)",
            api=api_fps,
            raw=raw_fps,
            notes={
                "frames": frames,
                "delivered_at_B_per_s": round(frames / delivered),
                "raw_batched_per_s": round(frames / raw_batched_seconds),
                "ratio": f"{api_fps / raw_fps:.2f}",
            },
        ),
        Result(
            f"stream latency ingest(A) -> subscriber(B), {RATE} frames/s",
            "ms p50 (lower is better)",
            api=percentile(e2e_latencies, 50) * 1000,
            notes={
                "e2e_p99_ms": ms(e2e_latencies, 99),
                "ack_p50_ms": ms(ack_latencies, 50),
                "ack_p99_ms": ms(ack_latencies, 99),
                "frames": len(e2e_latencies),
            },
        ),
    ]
