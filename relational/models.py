"""Registry tables (SQLAlchemy 2 declarative). Alembic revisions mirror these.

Every tenant-owned row carries `customer_id`; repositories filter on it.
"""

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
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSON, JSONB, REAL, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class Workstation(Base):
    __tablename__ = "workstations"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_pull_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_pull_cursor: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()


class ApiKey(Base):
    """A key `owk_<key_id>_<secret>`; only HMAC-SHA256(pepper, key) is stored."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    key_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    workstation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workstations.id", ondelete="CASCADE")
    )
    # For device keys: the drone serial the key may report for (None = any of the tenant's).
    device_serial: Mapped[str | None] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaced_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class CustomerVersion(Base):
    """The per-customer version counter: `UPDATE … RETURNING` serialises a tenant's writes."""

    __tablename__ = "customer_versions"

    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # Journal history and tombstones at or below this version were pruned:
    # a pull from an older cursor answers 410 cursor_expired.
    pruned_through: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )


class JournalEntry(Base):
    """One accepted change: the durable order of everything, and the Neo4j outbox."""

    __tablename__ = "sync_journal"
    __table_args__ = (
        UniqueConstraint("workstation_id", "mutation_id"),
        Index(
            "ix_sync_journal_pending",
            "customer_id",
            "version",
            postgresql_where=text("state = 'pending'"),
        ),
        Index(
            "ix_sync_journal_failed",
            "customer_id",
            "version",
            postgresql_where=text("state = 'failed'"),
        ),
        CheckConstraint("state IN ('pending', 'applied', 'failed')", name="state"),
    )

    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    op: Mapped[str] = mapped_column(String(8), nullable=False)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    workstation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    mutation_id: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(8), nullable=False, default="pending")
    created_at: Mapped[datetime] = _now()
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # `failed`: Neo4j refused the row; its error, kept for `overwatch verify`.
    error: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SyncEntity(Base):
    """The latest state of every synced entity (tombstones included).

    Pull reads it (each entity once, latest state), conflict detection compares
    `base_version` with it, and `verify` compares Neo4j with it.
    """

    __tablename__ = "sync_entities"
    __table_args__ = (
        Index("ix_sync_entities_customer_version", "customer_id", "version"),
        # Cascades (venue delete) and merges look entities up by their venue.
        Index(
            "ix_sync_entities_venue",
            "customer_id",
            "entity_type",
            text("(payload->>'venue_id')"),
            postgresql_where=text("NOT deleted"),
        ),
        # Ids are client-made UUIDs shared by Neo4j's global uniqueness
        # constraints: one id can never belong to two tenants.
        UniqueConstraint("entity_id"),
    )

    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    entity_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # json, not jsonb: kept as written, so envelopes splice it without
    # re-serialising (migration 0009).
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    merged_into: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_by: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _now()
    # True once a blob of this entity became available (never cleared): only
    # then do envelopes look up `blob_ids` (api/sync/envelopes.py).
    has_blobs: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    # The sync envelope without its closing brace, computed from the columns
    # above by a trigger (migration 0010); readers append blob_ids and "}".
    envelope: Mapped[str] = mapped_column(Text, nullable=False)


class Blob(Base):
    """One blob in S3-compatible storage: `pending` until its upload is confirmed.

    Bytes never pass through the API; this row is the registry's record of the
    object at `object_key` (always under `customers/<customer_id>/blobs/<id>`)
    and, optionally, of the synced entity that owns it.
    """

    __tablename__ = "blobs"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'available')", name="state"),
        CheckConstraint("declared_size >= 0", name="declared_size"),
        CheckConstraint("(owner_type IS NULL) = (owner_id IS NULL)", name="owner"),
        Index("ix_blobs_customer_created", "customer_id", "created_at", "id"),
        Index(
            "ix_blobs_customer_owner",
            "customer_id",
            "owner_id",
            postgresql_where=text("owner_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    object_key: Mapped[str] = mapped_column(String(300), nullable=False, unique=True)
    content_type: Mapped[str] = mapped_column(String(100), nullable=False)
    declared_size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    actual_size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    owner_type: Mapped[str | None] = mapped_column(String(32))
    owner_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# ------------------------------------------------------------------ fleet registry
# Kits and drones are preregistered by the admin (customer_id NULL) and claimed by
# a customer. Serials are global (they are printed at manufacture). `version` is
# the tenant version of the last journaled change (claim, assignment, name/model).
# Deleting a customer returns its hardware to the pool (SET NULL) rather than
# erasing the manufacture record.


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


class SyncMutation(Base):
    """The outcome of every processed workstation mutation, so a retry gets it back."""

    __tablename__ = "sync_mutations"
    __table_args__ = (
        Index(
            "ix_sync_mutations_applied",
            "workstation_id",
            "version",
            postgresql_where=text("status = 'applied'"),
        ),
    )

    workstation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workstations.id", ondelete="CASCADE"), primary_key=True
    )
    mutation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    version: Mapped[int | None] = mapped_column(BigInteger)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()


# ------------------------------------------------------------------ embeddings
class EmbeddingQueueItem(Base):
    """A venue or world node whose embedding may no longer match its text.

    Written by the journal in the same transaction as the upsert; consumed by
    the embedding worker (api/search/embedding_worker.py). Duplicates are
    expected and collapsed by the worker.
    """

    __tablename__ = "embedding_queue"
    __table_args__ = (
        CheckConstraint("entity_type IN ('venue', 'world_node')", name="entity_type"),
        Index("ix_embedding_queue_customer_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    enqueued_at: Mapped[datetime] = _now()


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


class StreamPresence(Base):
    """How many stream sockets one API process holds for one tenant, refreshed
    by that process (api/streams/hub.py) so `/stream/stats` can add them up."""

    __tablename__ = "stream_presence"

    process_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    ingest: Mapped[int] = mapped_column(Integer, nullable=False)
    subscribers: Mapped[int] = mapped_column(Integer, nullable=False)
    seen_at: Mapped[datetime] = _now()
