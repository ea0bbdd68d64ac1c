"""Messages of the two stream sockets and the stats endpoint.

Ingest frames follow the perception pipeline's payload (camera, timestamp,
summary with people, free and occupied places, detections). Unknown fields are
ignored so a newer pipeline keeps working; known fields of the wrong type make
the frame invalid.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from api.journal.storable import FilterDatetime, StorableModel
from api.sync.schemas import SYNC_TYPES

# A clock a little ahead of ours is fine; a frame from the future would pin the
# zone's occupancy (newer frames win) until real time caught up with it.
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_DETECTIONS = 2000
MAX_PLACES = 10_000


class EventType(StrEnum):
    change = "change"
    occupancy = "occupancy"
    liveness = "liveness"


class Detection(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    label: str = Field(
        validation_alias=AliasChoices("class", "label"),
        min_length=1,
        max_length=100,
        serialization_alias="class",
    )
    confidence: float = Field(ge=0, le=1)
    bbox: list[float] = Field(
        min_length=4, max_length=4, description="x1, y1, x2, y2 in the camera's pixels."
    )


Places = int | list[str | int]


class Summary(BaseModel):
    model_config = ConfigDict(extra="ignore")

    total_people: int = Field(ge=0, le=1_000_000)
    free: Places = Field(0, description="Free places: a count, or the list of their ids.")
    occupied: Places = Field(0, description="Occupied places: a count, or their ids.")
    detections: list[Detection] = Field(default_factory=list, max_length=MAX_DETECTIONS)

    @field_validator("free", "occupied")
    @classmethod
    def _check_places(cls, value: Places) -> Places:
        if isinstance(value, int) and not 0 <= value <= 1_000_000:
            raise ValueError("a count of places is 0 to 1000000")
        if isinstance(value, list) and len(value) > MAX_PLACES:
            raise ValueError(f"at most {MAX_PLACES} place ids")
        return value

    @staticmethod
    def count(places: Places) -> int:
        return places if isinstance(places, int) else len(places)


class IngestFrame(StorableModel):
    """One perception result: from a camera (mapped to its zone by the graph) or
    from a drone (which names the zone it observes)."""

    model_config = ConfigDict(extra="ignore")

    seq: int | None = Field(
        None,
        ge=0,
        description="Echoed in the ack; default: the frame's "
        "position on this connection (1, 2, …).",
    )
    camera: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        validation_alias=AliasChoices("camera", "camera_id"),
        description="The Camera node's id, or its `properties.external_id`.",
    )
    drone: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        validation_alias=AliasChoices("drone", "drone_serial", "drone_id"),
        description="Serial of the drone that produced the frame.",
    )
    zone_id: uuid.UUID | None = Field(
        None, description="The Zone a drone observes (drone frames without a camera only)."
    )
    timestamp: FilterDatetime | None = Field(
        None, description="Capture time (ISO 8601); naive times are UTC; default: arrival."
    )
    summary: Summary

    @model_validator(mode="after")
    def _check_source(self) -> IngestFrame:
        if self.camera is None and self.zone_id is None:
            raise ValueError("a frame names its camera, or (from a drone) its zone_id")
        if self.camera is not None and self.zone_id is not None:
            raise ValueError("a camera's zone comes from its OBSERVED_IN edge; omit zone_id")
        return self

    def observed_at(self, now: datetime) -> datetime:
        """The capture time, UTC; raises ValueError if it lies in the future."""
        if self.timestamp is None:
            return now
        at = self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=UTC)
        if at > now + MAX_CLOCK_SKEW:
            raise ValueError("timestamp is more than 5 minutes in the future")
        return at.astimezone(UTC)

    def detail(self) -> dict[str, Any] | None:
        """What the history keeps beyond the counts: place ids and detections."""
        kept: dict[str, Any] = {}
        for name in ("free", "occupied"):
            places = getattr(self.summary, name)
            if isinstance(places, list):
                kept[name] = places
        if self.summary.detections:
            kept["detections"] = [d.model_dump(by_alias=True) for d in self.summary.detections]
        return kept or None


class Subscription(BaseModel):
    """The first message on `/stream/subscribe` (and any later one, to refilter)."""

    model_config = ConfigDict(extra="forbid")

    venue_ids: list[uuid.UUID] | None = Field(
        None,
        max_length=1000,
        description="Only events of these venues; events that belong "
        "to no venue (kit and drone changes, drone liveness) always pass.",
    )
    event_types: list[EventType] = Field(default_factory=lambda: list(EventType), min_length=1)
    entity_types: list[str] | None = Field(
        None, description=f"Only change events of these entity types ({', '.join(SYNC_TYPES)})."
    )

    @field_validator("entity_types")
    @classmethod
    def _check_entity_types(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            unknown = sorted(set(value) - set(SYNC_TYPES))
            if unknown or not value:
                raise ValueError(f"unknown entity types {unknown}; allowed: {list(SYNC_TYPES)}")
        return value


class SubscribeMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscribe: Subscription


class StreamStats(BaseModel):
    ingest: int = Field(description="Open ingest sockets of the tenant, across API processes.")
    subscribers: int = Field(
        description="Open subscriber sockets of the tenant, across API processes."
    )
    processes: int = Field(description="API processes holding at least one of them.")
    this_process: dict[str, int] = Field(
        description="The same counts in the process that "
        "answered (always current; others are refreshed "
        "every few seconds)."
    )
