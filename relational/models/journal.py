"""The sync journal (system of record), latest state per entity, mutation outcomes, embed queue."""

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
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from relational.models.base import Base, _now


class JournalEntry(Base):
    """One accepted change: the durable order of everything, and the Neo4j outbox."""

    __tablename__ = "sync_journal"
    __table_args__ = (
        UniqueConstraint("workstation_id", "mutation_id"),
        Index(
            "ix_sync_journal_failed",
            "customer_id",
            "version",
            postgresql_where=text("state = 'failed'"),
        ),
        CheckConstraint("state IN ('pending', 'applied', 'failed')", name="state"),
    )

    # No foreign key: written only under the tenant's customer_versions lock,
    # and a deleted customer's rows go by trigger (migration 0016).
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    op: Mapped[str] = mapped_column(String(8), nullable=False)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    workstation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    mutation_id: Mapped[int | None] = mapped_column(BigInteger)
    # `pending` rows are applied once `JournalApplied.through` reaches their
    # version (migration 0019); `failed`: Neo4j refused it; `applied`: marked
    # per row before that migration, or a failed row a later change superseded.
    state: Mapped[str] = mapped_column(
        String(8),
        nullable=False,
        default="pending",
        comment=(
            "pending: applied to Neo4j once version <= journal_applied.through; "
            "failed: Neo4j refused it; applied: settled (marked per row before "
            "migration 0019, or a superseded failed row)"
        ),
    )
    created_at: Mapped[datetime] = _now()
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # `failed`: Neo4j refused the row; its error, kept for `overwatch verify`.
    error: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JournalApplied(Base):
    """How far a tenant's journal is applied to Neo4j: every row at or below
    `through` is applied or failed (migration 0019).

    Rows are applied in version order, so a watermark says what marking each
    row did, in one row's update per batch instead of one per change. Moved
    only by the holder of the tenant's apply lock (api/journal/apply.py).
    """

    __tablename__ = "journal_applied"

    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    through: Mapped[int] = mapped_column(BigInteger, nullable=False)
    applied_at: Mapped[datetime] = _now()


class SyncEntity(Base):
    """The latest state of every synced entity (tombstones included).

    Pull reads it (each entity once, latest state), conflict detection compares
    `base_version` with it, and `verify` compares Neo4j with it.
    """

    __tablename__ = "sync_entities"
    __table_args__ = (
        Index("ix_sync_entities_customer_version", "customer_id", "version"),
        # Scoped pull walks each venue of a scope in version order (migration 0013);
        # scoped bootstrap walks each venue's live entities of one type by id, and
        # cascades (venue delete) and merges look a venue's entities up by type.
        Index("ix_sync_entities_scope_version", "customer_id", "venue_id", "version"),
        Index(
            "ix_sync_entities_scope_live",
            "customer_id",
            "venue_id",
            "entity_type",
            "entity_id",
            postgresql_where=text("NOT deleted"),
        ),
        # Ids are client-made UUIDs shared by Neo4j's global uniqueness
        # constraints: one id can never belong to two tenants.
        UniqueConstraint("entity_id"),
    )

    # No foreign key: written only under the tenant's customer_versions lock,
    # and a deleted customer's rows go by trigger (migration 0016).
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
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
    # then do envelopes look up `blob_ids` (api/journal/envelopes.py).
    has_blobs: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    # The venue the entity belongs to for scoped sync: its own id for a venue,
    # `venue_id` of its (last) state otherwise, the nil UUID for tenant-wide
    # kits and drones; kept by the trigger (migration 0013), which also writes
    # a `sync_scope_exits` row whenever it changes.
    venue_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        nullable=False,
        server_default=text("'00000000-0000-0000-0000-000000000000'::uuid"),
    )
    # The sync envelope as sent for an entity without blobs, computed from the
    # columns above by a trigger (migrations 0010, 0017); readers rebuild the
    # blob_ids of rows flagged has_blobs (api/journal/envelopes.py).
    envelope: Mapped[str] = mapped_column(Text, nullable=False)


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
    # No foreign key, as for the journal (migration 0016).
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    enqueued_at: Mapped[datetime] = _now()
