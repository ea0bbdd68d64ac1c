"""One subscriber socket's queue and filter, and the event encoding."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from api.streams.schemas import EventType, Subscription

TOO_SLOW = (4008, "too slow")


STREAM_EVENTS = Counter(
    "overwatch_stream_events_total",
    "Events queued for subscribers of this process, by event type.",
    ["event"],
)


STREAM_DROPPED = Counter(
    "overwatch_stream_subscribers_dropped_total",
    "Subscriber sockets closed by the server, by reason.",
    ["reason"],
)


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), default=str)


@dataclass(eq=False)
class Subscriber:
    """One subscriber socket: its tenant, its filter and its bounded queue."""

    customer_id: str
    subscription: Subscription
    since: int  # change versions up to this one were committed before it subscribed
    queue: asyncio.Queue[str]
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = 1000
    close_reason: str = ""
    event_types: frozenset[str] = field(init=False)
    venues: frozenset[str] | None = field(init=False)
    entity_types: frozenset[str] | None = field(init=False)

    def __post_init__(self) -> None:
        self.refilter(self.subscription)

    def refilter(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.event_types = frozenset(subscription.event_types)
        self.venues = (
            None
            if subscription.venue_ids is None
            else frozenset(str(v) for v in subscription.venue_ids)
        )
        self.entity_types = (
            None if subscription.entity_types is None else frozenset(subscription.entity_types)
        )

    def wants(self, event: EventType, venue_id: str | None, entity_type: str | None = None) -> bool:
        if event not in self.event_types:
            return False
        if venue_id is not None and self.venues is not None and venue_id not in self.venues:
            return False
        return entity_type is None or self.entity_types is None or entity_type in self.entity_types

    def offer(self, message: str) -> None:
        """Queue a message without waiting; a full queue closes the subscriber."""
        if self.closed.is_set():
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            STREAM_DROPPED.labels(reason="too_slow").inc()
            self.close(*TOO_SLOW)

    def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()
