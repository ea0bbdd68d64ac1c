"""Kits and drones, and their telemetry: heartbeats, device events, update history, occupancy."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB, REAL, UUID
from sqlalchemy.orm import Mapped, mapped_column

from relational.models.base import Base, _now


class Kit(Base):
    """A field kit (case, workstation, drones) as preregistered at manufacture."""

    __tablename__ = "kits"
    __table_args__ = (Index("ix_kits_customer_serial", "customer_id", "serial"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    serial: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL")
    )
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Drone(Base):
    """A drone, its operator status, and its latest heartbeat (so lists need no join).

    Nothing the heartbeat path writes (`last_heartbeat*`, `firmware_version`) is
    indexed and the table keeps free space per page, so the per-heartbeat
    UPDATE stays a HOT update that rewrites no index entries.
    """

    __tablename__ = "drones"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'maintenance', 'retired')", name="status"),
        CheckConstraint(
            "liveness IN ('unknown', 'online', 'degraded', 'offline')", name="liveness"
        ),
        Index("ix_drones_customer_serial", "customer_id", "serial"),
        Index("ix_drones_kit_id", "kit_id"),
        {"postgresql_with": {"fillfactor": 70}},
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    serial: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    model: Mapped[str | None] = mapped_column(String(100))
    kit_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("kits.id", ondelete="SET NULL"))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    liveness: Mapped[str] = mapped_column(String(16), nullable=False, default="unknown")
    liveness_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_heartbeat: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Heartbeat(Base):
    """One heartbeat: high-volume, append-only, pruned by age (`overwatch prune`).

    No foreign key on `customer_id`: a key-share lock on the tenant's row per
    insert would turn into multixacts under concurrent ingest. The drone
    foreign key is free, the insert already holds that row's lock.
    """

    __tablename__ = "heartbeats"
    __table_args__ = (
        CheckConstraint("status IN ('healthy', 'degraded', 'failed')", name="status"),
        Index("ix_heartbeats_drone_received", "drone_id", "received_at"),
        # BRIN: tiny, cheap to maintain on an append-only table, enough for the
        # range delete of retention.
        Index("ix_heartbeats_received_at", "received_at", postgresql_using="brin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    drone_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("drones.id", ondelete="CASCADE"), nullable=False
    )
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    cpu_percent: Mapped[float] = mapped_column(REAL, nullable=False)
    memory_percent: Mapped[float] = mapped_column(REAL, nullable=False)
    disk_percent: Mapped[float] = mapped_column(REAL, nullable=False)
    temperature_c: Mapped[float] = mapped_column(REAL, nullable=False)
    battery_percent: Mapped[float] = mapped_column(REAL, nullable=False)
    firmware_version: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    uptime_seconds: Mapped[int | None] = mapped_column(BigInteger)
    ip: Mapped[str | None] = mapped_column(INET)


class DeviceEvent(Base):
    """Something that happened to a drone: liveness transitions, status, updates, kit moves."""

    __tablename__ = "device_events"
    __table_args__ = (
        CheckConstraint("severity IN ('info', 'warning', 'error')", name="severity"),
        Index("ix_device_events_drone_id", "drone_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    drone_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("drones.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    severity: Mapped[str] = mapped_column(String(8), nullable=False)
    message: Mapped[str] = mapped_column(String(500), nullable=False)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class UpdateRecord(Base):
    """One firmware update attempt on a drone and how it ended."""

    __tablename__ = "update_history"
    __table_args__ = (
        CheckConstraint("status IN ('success', 'failed', 'rolled_back')", name="status"),
        CheckConstraint("finished_at IS NULL OR finished_at >= started_at", name="times"),
        Index("ix_update_history_drone_id", "drone_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    drone_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("drones.id", ondelete="CASCADE"), nullable=False
    )
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    health_check_passed: Mapped[bool | None] = mapped_column(Boolean)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_message: Mapped[str | None] = mapped_column(String(2000))
    recorded_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


# ------------------------------------------------------------------ streams
class OccupancyRecord(Base):
    """One accepted perception frame: the counts it reported for one zone.

    Written by the ingest stream in batches (api/streams/occupancy.py); the
    zone node in Neo4j carries only the latest counts. No foreign keys: this
    is high-volume telemetry about graph entities, pruned by `overwatch prune`
    after OCCUPANCY_RETENTION_DAYS.
    """

    __tablename__ = "occupancy_history"
    __table_args__ = (
        Index("ix_occupancy_history_zone", "customer_id", "zone_id", "observed_at"),
        Index("ix_occupancy_history_received_at", "received_at", postgresql_using="brin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    zone_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    venue_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    camera_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    drone_serial: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(200), nullable=False)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    received_at: Mapped[datetime] = _now()
    people: Mapped[int] = mapped_column(Integer, nullable=False)
    free: Mapped[int] = mapped_column(Integer, nullable=False)
    occupied: Mapped[int] = mapped_column(Integer, nullable=False)
    detections: Mapped[int] = mapped_column(Integer, nullable=False)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
