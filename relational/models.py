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
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
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


class JournalEntry(Base):
    """One accepted change: the durable order of everything, and the Neo4j outbox."""

    __tablename__ = "sync_journal"
    __table_args__ = (
        UniqueConstraint("workstation_id", "mutation_id"),
        Index("ix_sync_journal_pending", "customer_id", "version",
              postgresql_where=text("state = 'pending'")),
        Index("ix_sync_journal_entity", "customer_id", "entity_type", "entity_id", "version"),
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


class SyncEntity(Base):
    """The latest state of every synced entity (tombstones included).

    Pull reads it (each entity once, latest state), conflict detection compares
    `base_version` with it, and `verify` compares Neo4j with it.
    """

    __tablename__ = "sync_entities"
    __table_args__ = (
        Index("ix_sync_entities_customer_version", "customer_id", "version"),
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
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    merged_into: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_by: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _now()


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
        Index("ix_blobs_customer_owner", "customer_id", "owner_id",
              postgresql_where=text("owner_id IS NOT NULL")),
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
