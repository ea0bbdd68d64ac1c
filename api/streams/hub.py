"""The subscribers of this API process, and the LISTEN loop that feeds them.

Fan-out across processes goes through Postgres `LISTEN/NOTIFY`, no broker:

* `overwatch_changes`: `record()` (api/journal/) notifies `{customer_id,
  first, last}` inside the journal's transaction. Notifications arrive on
  commit, in commit order, and one tenant's versions commit in order, so each
  tenant's ranges arrive in version order. The hub reads the rows of a range
  from `sync_journal` only for tenants with subscribers here.
* `overwatch_occupancy`: one small notification per accepted frame, sent by
  the ingest batch's own INSERT (api/streams/occupancy.py).
* `overwatch_liveness`: a row trigger on `device_events` (migration
  0006_streams) for every drone liveness transition.

Every process holds one dedicated asyncpg connection for LISTEN and
reconnects if it drops. Change delivery cannot lose a version: the hub keeps,
per tenant, the last version it delivered and always reads from there, so a
range whose notification was missed (a reconnect, an overflowing inbox) is
read with the next one, and after a reconnect every tenant is caught up at
once. Occupancy and liveness are telemetry: one missed while the connection
was down is not replayed (the next frame supersedes it).

A notifying transaction takes Postgres's notification queue lock at commit,
so such commits serialise for an instant; bench/streams.py measures the whole
path at several thousand frames/s.

Other parts of the process may use the same connection through a listener
hook (`add_hook`): channels of their own, told when the connection comes up
(with a way to run a statement on it) and when it is lost. The key cache
(api/auth/cache.py) is one: its cache may be used only while LISTEN is up.

Each subscriber has a bounded queue. The dispatcher never waits for a
subscriber: one whose queue is full is closed with 4008 `too slow`, and
everyone else carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

import structlog
from prometheus_client import Gauge
from sqlalchemy import text

from api.auth.cache import auth_cache
from api.core.observability import error_text
from api.core.resources import Resources
from api.journal.record import CHANGES_CHANNEL
from api.streams.listener import ListenerHook, Listening
from api.streams.schemas import EventType, StreamStats, Subscription
from api.streams.subscriber import STREAM_EVENTS, Subscriber, encode

log = structlog.get_logger("api.streams")


OCCUPANCY_CHANNEL = "overwatch_occupancy"


LIVENESS_CHANNEL = "overwatch_liveness"


CHANNELS = (CHANGES_CHANNEL, OCCUPANCY_CHANNEL, LIVENESS_CHANNEL)


INBOX_LIMIT = 100_000  # notifications waiting for the dispatcher


DISPATCH_BATCH = 1000  # notifications handled per dispatcher turn


CATCH_UP_LIMIT = 20_000  # most change rows read for one tenant in one turn


PRESENCE_SECONDS = 5.0  # how often this process refreshes its stream_presence rows


PRESENCE_FRESH_SECONDS = 3 * PRESENCE_SECONDS


STREAM_SUBSCRIBERS = Gauge(
    "overwatch_stream_subscribers", "Open subscriber sockets in this process."
)


STREAM_INGEST = Gauge("overwatch_stream_ingest_connections", "Open ingest sockets in this process.")


_CURRENT_VERSION = text("SELECT version FROM customer_versions WHERE customer_id = :c")


# The venue of a change: its own id for a venue, `venue_id` of its last state
# (journaled for deletes too) for nodes, edges and operations; none for kits
# and drones.
# `left_venue_id`: the venue the entity left with this change (an exit, written
# by the sync_entities trigger, migration 0013), so a subscriber following
# that venue hears that the entity is gone from it.
_CHANGES = text(
    "SELECT j.version, j.entity_type, j.entity_id, j.op, "
    "CASE WHEN j.entity_type = 'venue' THEN j.entity_id::text ELSE j.payload->>'venue_id' END "
    "AS venue_id, j.payload->>'merged_into' AS merged_into, x.venue_id::text AS left_venue_id "
    "FROM sync_journal j LEFT JOIN sync_scope_exits x ON x.customer_id = j.customer_id "
    "AND x.version = j.version AND x.entity_id = j.entity_id "
    "WHERE j.customer_id = :c AND j.version BETWEEN :first AND :last "
    "ORDER BY j.version"
)


_PRESENCE_UPSERT = text(
    "INSERT INTO stream_presence (process_id, customer_id, ingest, subscribers, seen_at) "
    "SELECT :p, r.c, r.i, r.s, now() FROM unnest(CAST(:cs AS uuid[]), CAST(:is AS int[]), "
    "CAST(:ss AS int[])) AS r(c, i, s) "
    "ON CONFLICT (process_id, customer_id) DO UPDATE SET ingest = excluded.ingest, "
    "subscribers = excluded.subscribers, seen_at = now()"
)


_PRESENCE_DROP = text(
    "DELETE FROM stream_presence WHERE process_id = :p "
    "AND NOT (customer_id = ANY(CAST(:cs AS uuid[])))"
)


# Rows of processes that died without cleaning up.
_PRESENCE_EXPIRE = text("DELETE FROM stream_presence WHERE seen_at < now() - interval '1 hour'")


_PRESENCE_OTHERS = text(
    "SELECT COALESCE(sum(ingest), 0) AS ingest, COALESCE(sum(subscribers), 0) AS subscribers, "
    "count(*) FILTER (WHERE ingest > 0 OR subscribers > 0) AS processes "
    "FROM stream_presence WHERE customer_id = :c AND process_id <> :p "
    "AND seen_at > now() - make_interval(secs => :fresh)"
)


class StreamHub(Listening):
    """Local subscriber registry, connection counts and the LISTEN/dispatch loops."""

    channels = CHANNELS

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.process_id = uuid.uuid4()
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.ingest: Tally[str] = Tally()
        self.listening = asyncio.Event()
        self._cursor: dict[str, int] = {}  # last change version delivered, per tenant
        self._inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(INBOX_LIMIT)
        self._catch_up_all = False
        self._presence_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._hooks: list[ListenerHook] = [auth_cache(resources)]
        self._hooks_connected = False
        self._listener_lock = asyncio.Lock()  # one statement at a time on the LISTEN connection

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for name, loop in (
            ("listen", self._listen_loop),
            ("dispatch", self._dispatch_loop),
            ("presence", self._presence_loop),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"overwatch:stream_{name}"))

    async def stop(self) -> None:
        for subscribers in self.subscribers.values():
            for subscriber in subscribers:
                subscriber.close(1001, "server shutting down")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._hooks_lost()
        await auth_cache(self.resources).close()
        with contextlib.suppress(Exception):
            async with self.resources.engine.begin() as conn:
                await conn.execute(_PRESENCE_DROP, {"p": self.process_id, "cs": []})

    # ------------------------------------------------------------ registry
    async def subscribe(self, customer_id: str, subscription: Subscription) -> Subscriber:
        """Register a subscriber; its queue starts with the `subscribed` message."""
        async with self.resources.engine.connect() as conn:
            since = int((await conn.execute(_CURRENT_VERSION, {"c": customer_id})).scalar() or 0)
        queue: asyncio.Queue[str] = asyncio.Queue(self.resources.settings.stream_subscriber_queue)
        subscriber = Subscriber(customer_id, subscription, since, queue)
        subscriber.offer(self.subscribed_message(subscriber))
        self.subscribers.setdefault(customer_id, set()).add(subscriber)
        # Nothing at or below `since` is owed to anyone new; a tenant already
        # followed keeps its cursor (older, and owed to its other subscribers).
        self._cursor.setdefault(customer_id, since)
        STREAM_SUBSCRIBERS.inc()
        self._presence_changed.set()
        return subscriber

    @staticmethod
    def subscribed_message(subscriber: Subscriber) -> str:
        sub = subscriber.subscription
        return encode(
            {
                "event": "subscribed",
                "version": subscriber.since,
                "venue_ids": sub.venue_ids,
                "event_types": sub.event_types,
                "entity_types": sub.entity_types,
            }
        )

    def unsubscribe(self, subscriber: Subscriber) -> None:
        tenant = self.subscribers.get(subscriber.customer_id)
        if tenant is None or subscriber not in tenant:
            return
        tenant.discard(subscriber)
        if not tenant:
            del self.subscribers[subscriber.customer_id]
            self._cursor.pop(subscriber.customer_id, None)
        STREAM_SUBSCRIBERS.dec()
        self._presence_changed.set()

    def ingest_opened(self, customer_id: str) -> None:
        self.ingest[customer_id] += 1
        STREAM_INGEST.inc()
        self._presence_changed.set()

    def ingest_closed(self, customer_id: str) -> None:
        self.ingest[customer_id] -= 1
        if self.ingest[customer_id] <= 0:
            del self.ingest[customer_id]
        STREAM_INGEST.dec()
        self._presence_changed.set()

    def local_counts(self, customer_id: str) -> dict[str, int]:
        return {
            "ingest": self.ingest.get(customer_id, 0),
            "subscribers": len(self.subscribers.get(customer_id, ())),
        }

    async def stats(self, customer_id: str) -> StreamStats:
        """This process's counts now, plus what the other processes last reported."""
        local = self.local_counts(customer_id)
        async with self.resources.engine.connect() as conn:
            others = (
                await conn.execute(
                    _PRESENCE_OTHERS,
                    {"c": customer_id, "p": self.process_id, "fresh": PRESENCE_FRESH_SECONDS},
                )
            ).one()
        here = 1 if local["ingest"] or local["subscribers"] else 0
        return StreamStats(
            ingest=local["ingest"] + int(others.ingest),
            subscribers=local["subscribers"] + int(others.subscribers),
            processes=here + int(others.processes),
            this_process=local,
        )

    # ------------------------------------------------------------ dispatch
    async def _dispatch_loop(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < DISPATCH_BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            try:
                await self._dispatch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Cursors did not move: the catch-up re-reads every range after them.
                log.warning("stream.dispatch_failed", error=error_text(exc))
                await asyncio.sleep(0.5)
                self._catch_up_all = True
                with contextlib.suppress(asyncio.QueueFull):
                    self._inbox.put_nowait(("catch_up", ""))

    async def _dispatch(self, batch: Iterable[tuple[str, str]]) -> None:
        ranges: dict[str, int] = {}  # tenant -> last version announced in this batch
        catch_up = False
        for channel, payload in batch:
            if channel == "catch_up":
                catch_up = True
                continue
            try:
                note = json.loads(payload)
                if channel == CHANGES_CHANNEL:
                    tenant = note["customer_id"]
                    if tenant in self.subscribers:
                        ranges[tenant] = max(ranges.get(tenant, 0), int(note["last"]))
                elif channel == OCCUPANCY_CHANNEL:
                    self._deliver_occupancy(note)
                elif channel == LIVENESS_CHANNEL:
                    self._deliver_liveness(note)
            except (ValueError, KeyError, TypeError) as exc:  # not ours: skip it
                log.warning("stream.bad_notification", channel=channel, error=str(exc)[:200])
        if catch_up or (self._catch_up_all and self._inbox.empty()):
            self._catch_up_all = False
            ranges |= await self._current_versions(list(self.subscribers))
        for tenant, last in ranges.items():
            await self._deliver_changes(tenant, last)

    async def _current_versions(self, tenants: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        async with self.resources.engine.connect() as conn:
            for tenant in tenants:
                version = (await conn.execute(_CURRENT_VERSION, {"c": tenant})).scalar()
                if version is not None:
                    found[tenant] = int(version)
        return found

    async def _deliver_changes(self, tenant: str, last: int) -> None:
        """Deliver the tenant's changes after its cursor, up to `last`, in version order."""
        cursor = self._cursor.get(tenant)
        if cursor is None or last <= cursor:
            return
        first = cursor + 1
        if last - first + 1 > CATCH_UP_LIMIT:
            # Too far behind to replay: say so, and let clients pull the rest.
            skipped_to = last - CATCH_UP_LIMIT
            gap = encode(
                {
                    "event": "gap",
                    "after": cursor,
                    "through": skipped_to,
                    "message": "changes were skipped; pull from `after`",
                }
            )
            for subscriber in list(self.subscribers.get(tenant, ())):
                subscriber.offer(gap)
            first = skipped_to + 1
        async with self.resources.engine.connect() as conn:
            rows = (await conn.execute(_CHANGES, {"c": tenant, "first": first, "last": last})).all()
        # Subscribers may have come or gone while we read; deliver to those here now.
        if self._cursor.get(tenant) != cursor:
            return
        self._cursor[tenant] = last
        subscribers = list(self.subscribers.get(tenant, ()))
        delivered = 0
        for row in rows:
            event = {
                "event": "change",
                "type": row.entity_type,
                "id": str(row.entity_id),
                "op": row.op,
                "version": int(row.version),
                "venue_id": row.venue_id,
            }
            if row.merged_into:
                event["merged_into"] = row.merged_into
            if row.left_venue_id:
                event["left_venue_id"] = row.left_venue_id
            message = encode(event)
            for subscriber in subscribers:
                if row.version > subscriber.since and (
                    subscriber.wants(EventType.change, row.venue_id, row.entity_type)
                    or (
                        row.left_venue_id is not None
                        and subscriber.wants(EventType.change, row.left_venue_id, row.entity_type)
                    )
                ):
                    subscriber.offer(message)
                    delivered += 1
        STREAM_EVENTS.labels(event="change").inc(delivered)

    def _deliver(
        self, tenant: str, kind: EventType, venue_id: str | None, event: dict[str, Any]
    ) -> None:
        subscribers = self.subscribers.get(tenant)
        if not subscribers:
            return
        message: str | None = None
        delivered = 0
        for subscriber in list(subscribers):
            if subscriber.wants(kind, venue_id):
                message = message or encode(event)
                subscriber.offer(message)
                delivered += 1
        STREAM_EVENTS.labels(event=kind.value).inc(delivered)

    def _deliver_occupancy(self, note: dict[str, Any]) -> None:
        tenant = note.pop("customer_id")
        places = note["free"] + note["occupied"]
        note["occupied_percent"] = round(100.0 * note["occupied"] / places, 1) if places else None
        self._deliver(
            tenant, EventType.occupancy, note.get("venue_id"), {"event": "occupancy", **note}
        )

    def _deliver_liveness(self, note: dict[str, Any]) -> None:
        tenant = note.pop("customer_id")
        self._deliver(tenant, EventType.liveness, None, {"event": "liveness", **note})

    # ------------------------------------------------------------ presence
    async def _presence_loop(self) -> None:
        last_expiry = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._presence_changed.wait(), PRESENCE_SECONDS)
                await asyncio.sleep(0.1)  # a burst of connects is one write
            self._presence_changed.clear()
            tenants = sorted(set(self.subscribers) | set(self.ingest))
            try:
                async with self.resources.engine.begin() as conn:
                    if tenants:
                        await conn.execute(
                            _PRESENCE_UPSERT,
                            {
                                "p": self.process_id,
                                "cs": tenants,
                                "is": [self.ingest.get(t, 0) for t in tenants],
                                "ss": [len(self.subscribers.get(t, ())) for t in tenants],
                            },
                        )
                    await conn.execute(_PRESENCE_DROP, {"p": self.process_id, "cs": tenants})
                    if time.monotonic() - last_expiry > 600:
                        await conn.execute(_PRESENCE_EXPIRE)
                        last_expiry = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream.presence_failed", error=error_text(exc))
