"""Occupancy from perception frames: where a frame belongs, and writing it down.

* `ZoneResolver` maps a camera to its zone through the graph (a `Camera` world
  node with an `OBSERVED_IN` edge to a `Zone`) and caches the answer per tenant
  for STREAM_CAMERA_CACHE_SECONDS, so frames are not graph lookups.
* `OccupancyWriter` is the process's one writer. Frames from every ingest
  socket queue up; while one batch is written the next one gathers (group
  commit), so a batch costs one Postgres statement and one Neo4j transaction
  whatever its size. The statement inserts the history rows and notifies
  `overwatch_occupancy` for each, so subscribers of every process hear of a
  frame when its row commits.
* The zone's `occupancy_*` properties are live telemetry, outside the journal:
  set by the newest frame (by capture time), preserved by world-node upserts
  (graph/projection.py), and never synced to workstations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import LiteralString

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import text

from api.auth.principal import Principal
from api.core.observability import error_text
from api.core.resources import Resources
from api.streams.schemas import IngestFrame, Summary
from relational.database import delete_in_batches

log = structlog.get_logger("api.streams.occupancy")

MAX_BATCH = 500
CACHE_LIMIT = 50_000
NEGATIVE_TTL_SECONDS = 2.0  # an unknown camera is looked up again this soon

FRAMES_ACCEPTED = Counter("overwatch_stream_frames_total", "Ingest frames stored.")
ZONE_WRITE_FAILURES = Counter(
    "overwatch_stream_zone_write_failures_total",
    "Occupancy batches whose Neo4j zone update failed "
    "(history was stored; the next frame sets the zone).",
)
BATCH_SECONDS = Histogram(
    "overwatch_stream_batch_duration_seconds",
    "Time to store one batch of frames (Postgres and Neo4j).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)

# A camera given by its node id or by `properties.external_id`; its zone is
# the far end of its currently valid OBSERVED_IN edge (the newest if several).
CAMERA_ZONE: LiteralString = """
CALL () {
  MATCH (c:WorldNode {id: $camera}) WHERE c.customer_id = $customer_id AND c:Camera
  RETURN c
  UNION
  MATCH (c:Camera) WHERE c.customer_id = $customer_id AND c.p_external_id = $camera
  RETURN c
}
OPTIONAL MATCH (c)-[r:OBSERVED_IN]->(z:Zone)
WHERE r.customer_id = $customer_id AND z.customer_id = $customer_id
  AND (r.valid_from IS NULL OR r.valid_from <= datetime())
  AND (r.valid_to IS NULL OR r.valid_to > datetime())
RETURN c.id AS camera_id, z.id AS zone_id, z.venue_id AS venue_id
ORDER BY r.valid_from IS NULL, r.valid_from DESC
LIMIT 1
"""

ZONE_OF: LiteralString = """
MATCH (z:WorldNode {id: $zone_id}) WHERE z.customer_id = $customer_id AND z:Zone
RETURN z.id AS zone_id, z.venue_id AS venue_id
"""

# Newest capture time wins, whichever process or batch writes last.
ZONE_OCCUPANCY: LiteralString = """
UNWIND $rows AS row
MATCH (z:WorldNode {id: row.zone_id})
WHERE z.customer_id = row.customer_id AND z:Zone
  AND (z.occupancy_at IS NULL OR z.occupancy_at <= row.at)
SET z.occupancy_people = row.people, z.occupancy_free = row.free,
    z.occupancy_occupied = row.occupied, z.occupancy_at = row.at
"""

_DRONE = text("SELECT 1 FROM drones WHERE customer_id = :c AND serial = :s")

_INSERT = text("""
WITH written AS (
    INSERT INTO occupancy_history (customer_id, zone_id, venue_id, camera_id, drone_serial,
                                   source, observed_at, people, free, occupied, detections,
                                   detail)
    SELECT r.customer_id, r.zone_id, r.venue_id, r.camera_id, r.drone_serial, r.source,
           r.observed_at, r.people, r.free, r.occupied, r.detections, r.detail::jsonb
    FROM unnest(CAST(:customer_ids AS uuid[]), CAST(:zone_ids AS uuid[]),
                CAST(:venue_ids AS uuid[]), CAST(:camera_ids AS uuid[]),
                CAST(:drone_serials AS text[]), CAST(:sources AS text[]),
                CAST(:observed_ats AS timestamptz[]), CAST(:people AS int[]),
                CAST(:free AS int[]), CAST(:occupied AS int[]), CAST(:detections AS int[]),
                CAST(:details AS text[]))
         AS r(customer_id, zone_id, venue_id, camera_id, drone_serial, source, observed_at,
              people, free, occupied, detections, detail)
    RETURNING customer_id, zone_id, venue_id, camera_id, drone_serial, source, observed_at,
              received_at, people, free, occupied, detections
)
SELECT count(pg_notify('overwatch_occupancy', json_build_object(
    'customer_id', customer_id, 'zone_id', zone_id, 'venue_id', venue_id,
    'camera_id', camera_id, 'drone', drone_serial, 'source', source, 'at', observed_at,
    'received_at', received_at, 'people', people, 'free', free, 'occupied', occupied,
    'detections', detections)::text)) FROM written
""")

_PRUNE = text(
    "DELETE FROM occupancy_history WHERE id IN ("
    " SELECT id FROM occupancy_history WHERE received_at < :cutoff LIMIT :batch)"
)


class FrameRejected(Exception):
    """A frame that was not stored; becomes an error frame with `code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Target:
    zone_id: str
    venue_id: str
    camera_id: str | None = None


@dataclass(frozen=True)
class Observation:
    customer_id: str
    target: Target
    drone_serial: str | None
    source: str
    observed_at: datetime
    people: int
    free: int
    occupied: int
    detections: int
    detail: str | None


class ZoneResolver:
    """Where a frame's counts go, cached per tenant; misses are cached briefly too."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.ttl = float(resources.settings.stream_camera_cache_seconds)
        self._entries: dict[tuple[str, str, str], tuple[float, Target | FrameRejected]] = {}

    async def _cached(
        self, key: tuple[str, str, str], load: Callable[[], Awaitable[Target]]
    ) -> Target:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            try:
                value: Target | FrameRejected = await load()
                expires = now + self.ttl
            except FrameRejected as rejected:
                value, expires = rejected, now + min(self.ttl, NEGATIVE_TTL_SECONDS)
            except Exception as exc:  # a store is down: not cached, not the client's fault
                log.warning("stream.lookup_failed", error=error_text(exc))
                raise FrameRejected(
                    "unavailable", "the venue graph is unavailable; retry later"
                ) from exc
            if len(self._entries) >= CACHE_LIMIT:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= CACHE_LIMIT:
                    self._entries.clear()
            if self.ttl > 0:
                self._entries[key] = (expires, value)
            entry = (expires, value)
        if isinstance(entry[1], FrameRejected):
            raise entry[1]
        return entry[1]

    async def camera(self, customer_id: str, camera: str) -> Target:
        async def load() -> Target:
            rows = await self.resources.graph.read(
                "stream.camera_zone", CAMERA_ZONE, {"customer_id": customer_id, "camera": camera}
            )
            if not rows:
                raise FrameRejected(
                    "unknown_camera",
                    f"no Camera node {camera!r} (by id or properties.external_id) in this tenant",
                )
            if rows[0]["zone_id"] is None:
                raise FrameRejected(
                    "camera_not_in_zone",
                    f"camera {camera!r} has no valid OBSERVED_IN edge to a Zone",
                )
            return Target(rows[0]["zone_id"], rows[0]["venue_id"], rows[0]["camera_id"])

        return await self._cached((customer_id, "camera", camera), load)

    async def zone(self, customer_id: str, zone_id: str) -> Target:
        async def load() -> Target:
            rows = await self.resources.graph.read(
                "stream.zone", ZONE_OF, {"customer_id": customer_id, "zone_id": zone_id}
            )
            if not rows:
                raise FrameRejected("unknown_zone", f"no Zone {zone_id} in this tenant")
            return Target(rows[0]["zone_id"], rows[0]["venue_id"])

        return await self._cached((customer_id, "zone", zone_id), load)

    async def drone(self, customer_id: str, serial: str) -> None:
        async def load() -> Target:
            async with self.resources.engine.connect() as conn:
                found = (await conn.execute(_DRONE, {"c": customer_id, "s": serial})).first()
            if found is None:
                raise FrameRejected("unknown_drone", f"no drone {serial!r} in this tenant")
            return Target("", "")

        await self._cached((customer_id, "drone", serial), load)

    async def observe(self, principal: Principal, frame: IngestFrame) -> Observation:
        """The observation a valid frame makes, or `FrameRejected`."""
        customer_id = str(principal.customer_id)
        bound = principal.device_serial
        if bound is not None and frame.drone is not None and frame.drone != bound:
            raise FrameRejected("forbidden", "this device key reports for another drone")
        drone = frame.drone or bound
        if frame.camera is None and drone is None:
            raise FrameRejected(
                "invalid_frame",
                "a frame without a camera names its drone "
                "(or comes with the drone's own device key)",
            )
        try:
            observed_at = frame.observed_at(datetime.now(UTC))
        except ValueError as exc:
            raise FrameRejected("invalid_frame", str(exc)) from exc
        if frame.camera is not None:
            target = await self.camera(customer_id, frame.camera)
        else:
            assert frame.zone_id is not None  # IngestFrame's validator
            target = await self.zone(customer_id, str(frame.zone_id))
        if frame.drone is not None and frame.drone != bound:
            await self.drone(customer_id, frame.drone)
        detail = frame.detail()
        return Observation(
            customer_id=customer_id,
            target=target,
            drone_serial=drone,
            source=frame.camera or drone or "",
            observed_at=observed_at,
            people=frame.summary.total_people,
            free=Summary.count(frame.summary.free),
            occupied=Summary.count(frame.summary.occupied),
            detections=len(frame.summary.detections),
            detail=None if detail is None else json.dumps(detail, separators=(",", ":")),
        )


class OccupancyWriter:
    """Group commit of observations: history + notification in Postgres, latest
    counts on the zones in Neo4j. Each future resolves once its row committed."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._queue: asyncio.Queue[tuple[Observation, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="overwatch:occupancy_writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(FrameRejected("unavailable", "the server is shutting down"))

    def submit(self, observation: Observation) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((observation, future))
        return future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            stored = False
            try:
                started = time.perf_counter()
                stored, _ = await asyncio.gather(
                    self._store_history([o for o, _ in batch]),
                    self._set_zones([o for o, _ in batch]),
                )
                BATCH_SECONDS.observe(time.perf_counter() - started)
            except Exception as exc:  # never let one batch stop the writer
                log.warning("stream.batch_failed", error=error_text(exc))
            finally:
                # Every frame gets its answer, also when the writer is being stopped.
                for _, future in batch:
                    if future.done():
                        continue
                    if stored:
                        future.set_result(None)
                    else:
                        future.set_exception(
                            FrameRejected("unavailable", "the frame was not stored; retry later")
                        )
            if stored:
                FRAMES_ACCEPTED.inc(len(batch))

    async def _store_history(self, batch: list[Observation]) -> bool:
        params = {
            "customer_ids": [o.customer_id for o in batch],
            "zone_ids": [o.target.zone_id for o in batch],
            "venue_ids": [o.target.venue_id for o in batch],
            "camera_ids": [o.target.camera_id for o in batch],
            "drone_serials": [o.drone_serial for o in batch],
            "sources": [o.source for o in batch],
            "observed_ats": [o.observed_at for o in batch],
            "people": [o.people for o in batch],
            "free": [o.free for o in batch],
            "occupied": [o.occupied for o in batch],
            "detections": [o.detections for o in batch],
            "details": [o.detail for o in batch],
        }
        try:
            # One statement is its own transaction: autocommit saves BEGIN and COMMIT.
            async with self.resources.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(_INSERT, params)
        except Exception as exc:
            log.warning(
                "stream.history_failed",
                frames=len(batch),
                error=error_text(exc),
            )
            return False
        return True

    async def _set_zones(self, batch: list[Observation]) -> None:
        latest: dict[tuple[str, str], Observation] = {}
        for o in batch:
            key = (o.customer_id, o.target.zone_id)
            if key not in latest or latest[key].observed_at <= o.observed_at:
                latest[key] = o
        rows = [
            {
                "customer_id": o.customer_id,
                "zone_id": o.target.zone_id,
                "people": o.people,
                "free": o.free,
                "occupied": o.occupied,
                "at": o.observed_at,
            }
            for o in latest.values()
        ]
        try:
            await self.resources.graph.write(
                "stream.zone_occupancy", ZONE_OCCUPANCY, {"rows": rows}
            )
        except Exception as exc:
            ZONE_WRITE_FAILURES.inc()
            log.warning(
                "stream.zone_write_failed",
                zones=len(rows),
                error=error_text(exc),
            )


async def prune_occupancy(resources: Resources, older_than: datetime) -> int:
    """Delete occupancy history received before `older_than`, in batches; returns how many."""
    removed = await delete_in_batches(resources.engine, _PRUNE, {"cutoff": older_than})
    log.info("stream.occupancy_pruned", removed=removed, older_than=older_than.isoformat())
    return removed
