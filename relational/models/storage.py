"""Blob records and stream presence."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from relational.models.base import Base, _now


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


class StreamPresence(Base):
    """How many stream sockets one API process holds for one tenant, refreshed
    by that process (api/streams/hub.py) so `/stream/stats` can add them up."""

    __tablename__ = "stream_presence"

    process_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    ingest: Mapped[int] = mapped_column(Integer, nullable=False)
    subscribers: Mapped[int] = mapped_column(Integer, nullable=False)
    seen_at: Mapped[datetime] = _now()
