"""`WS /api/v1/stream/subscribe`: one tenant's live events, filtered.

Protocol (JSON text messages):

1. Authenticate (api/streams/sockets.py), then send
   `{"subscribe": {"venue_ids": [...], "event_types": ["change", "occupancy",
   "liveness"], "entity_types": [...]}}` (every field optional; `{}` is
   everything). It may ride in the same first message as `api_key`.
2. The server answers `{"event": "subscribed", "version": V, ...}`: every
   change after version V will be delivered; a client that needs the changes
   up to V pulls them (`GET /sync/pull`).
3. Events: `change` (type, id, op, version, venue_id; every journaled change
   of the tenant, in version order, without gaps), `occupancy` (a zone's
   counts from an accepted perception frame), `liveness` (a drone's liveness
   transition), `ping` (heartbeat), and `gap` (the server skipped changes
   after a long outage; pull from `after`). A later `subscribe` message
   replaces the filter.

Like pull, the feed is bounded by the tenant's committed head and reads
Postgres only (api/streams/hub.py): `V` is the tenant's version counter when
it subscribed, and a change is delivered once its journal transaction has
committed, whether or not Neo4j has applied it yet, so the feed keeps flowing
while Neo4j is down (its lag is in `/sync/status`'s `projection`).

A subscriber that cannot keep up (its queue of STREAM_SUBSCRIBER_QUEUE events
is full) is closed with 4008 `too slow`; the others are not held back.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from api.auth.principal import Permission
from api.core.observability import error_text
from api.journal.scopes import scoped
from api.streams.hub import StreamHub
from api.streams.schemas import SubscribeMessage, Subscription
from api.streams.sockets import (
    POLICY,
    TRY_AGAIN,
    SocketClosed,
    SocketSession,
    close_socket,
    error_message,
    first_request,
    json_object,
    keep_alive,
    open_session,
    ping_message,
    receive,
)
from api.streams.subscriber import Subscriber

log = structlog.get_logger("api.streams.feed")


def parse_subscription(message: dict[str, object] | None) -> Subscription:
    """The filter of a `{"subscribe": {...}}` message, or SocketClosed."""
    try:
        return SubscribeMessage.model_validate(message).subscribe
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise SocketClosed(
            POLICY, f"invalid subscribe message: {problems}", "invalid_subscription"
        ) from exc


async def in_scope(session: SocketSession, subscription: Subscription) -> Subscription:
    """A scoped workstation's feed follows its sync scope (api/sync/scope.py)
    unless it names venues itself; the scope is read when (re)subscribing."""
    principal = session.principal
    if subscription.venue_ids is not None or principal.workstation_id is None:
        return subscription
    try:
        async with session.resources.sessions() as db:
            venues = await scoped(db, principal.workstation_id, principal.customer_id)
    except Exception as exc:
        raise SocketClosed(
            TRY_AGAIN, "postgres is unavailable; try again later", "unavailable"
        ) from exc
    if venues is None:
        return subscription
    return subscription.model_copy(update={"venue_ids": [v for v in venues if v.int]})


async def serve_subscriber(ws: WebSocket, hub: StreamHub) -> None:
    """Run one subscriber socket until it closes, for whatever reason."""
    try:
        session, rest = await open_session(ws, hub.resources, Permission.read)
        if rest is None:  # silent clients get everything (api/streams/sockets.py)
            grace = hub.resources.settings.stream_subscribe_grace_seconds
            rest = await first_request(session, grace, {"subscribe": {}})
        subscription = await in_scope(session, parse_subscription(rest))
        try:
            subscriber = await hub.subscribe(session.customer_id, subscription)
        except Exception as exc:
            log.warning("stream.subscribe_failed", error=error_text(exc))
            raise SocketClosed(
                TRY_AGAIN, "postgres is unavailable; try again later", "unavailable"
            ) from exc
    except SocketClosed as closed:
        await close_socket(ws, closed.code, closed.reason, closed.error_code)
        return
    except WebSocketDisconnect:
        return
    session.heard()
    try:
        outcome = await _run(session, subscriber)
    finally:
        hub.unsubscribe(subscriber)
    if outcome is not None:
        await close_socket(ws, *outcome)


async def _run(session: SocketSession, subscriber: Subscriber) -> tuple[int, str] | None:
    """Pump events out and read client messages until one side ends; the close to send."""
    ws = session.ws

    async def pump() -> None:
        while True:
            message = await subscriber.queue.get()
            await ws.send_text(message)

    async def listen() -> None:
        while True:
            raw = await receive(ws)
            session.heard()
            message = json_object(raw)
            if message is not None and message.get("type") == "pong":
                continue
            if message is not None and "subscribe" in message:
                try:
                    subscriber.refilter(await in_scope(session, parse_subscription(message)))
                except SocketClosed as bad:  # keep the old filter, say why
                    subscriber.offer(error_message(bad.error_code, bad.reason))
                    continue
                subscriber.offer(StreamHub.subscribed_message(subscriber))
                continue
            subscriber.offer(
                error_message(
                    "unknown_message", 'expected {"type": "pong"} or {"subscribe": {...}}'
                )
            )

    heartbeat = asyncio.create_task(
        keep_alive(session, Permission.read, lambda: subscriber.offer(ping_message()))
    )
    tasks = [
        asyncio.create_task(pump()),
        asyncio.create_task(listen()),
        heartbeat,
        asyncio.create_task(subscriber.closed.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if subscriber.closed.is_set():
        return subscriber.close_code, subscriber.close_reason
    if heartbeat.done() and not heartbeat.cancelled() and heartbeat.exception() is None:
        return heartbeat.result()
    return None  # the peer went away: nothing to say to it
