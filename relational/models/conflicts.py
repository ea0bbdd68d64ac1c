"""The conflict inbox (protocol v2): every `conflict` a push answered, until resolved or pruned.

A row keeps the mutation as the workstation sent it (the losing data), the
server's envelope when the push was judged and the tenant's head then, and,
once resolved, how (`accepted_server` or `reapplied`), by whom and, for a
re-applied one, the version its write got. Written by `POST /sync/push` in
its own transaction (api/sync/push.py), read and resolved by
`/sync/conflicts` (api/sync/conflicts.py); migration 0014.
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
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from relational.models.base import Base, _now


class SyncConflict(Base):
    """One conflict answered to a push; open until `resolved_at` is set."""

    __tablename__ = "sync_conflicts"
    __table_args__ = (
        # A retried push answers `duplicate` from sync_mutations and adds no
        # row; the constraint says so to the database too.
        UniqueConstraint("workstation_id", "mutation_id"),
        CheckConstraint("op IN ('upsert', 'delete')", name="op"),
        CheckConstraint("resolution IN ('accepted_server', 'reapplied')", name="resolution"),
        CheckConstraint("(resolved_at IS NULL) = (resolution IS NULL)", name="resolved"),
        # The listing (newest first, keyset on created_at and id): all, open
        # only, one workstation's, one entity's.
        Index("ix_sync_conflicts_listing", "customer_id", "created_at", "id"),
        Index(
            "ix_sync_conflicts_open",
            "customer_id",
            "created_at",
            "id",
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index("ix_sync_conflicts_workstation", "customer_id", "workstation_id", "created_at", "id"),
        Index("ix_sync_conflicts_entity", "customer_id", "entity_id", "created_at"),
        # Retention sweeps every tenant by age.
        Index("ix_sync_conflicts_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    workstation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workstations.id", ondelete="CASCADE"), nullable=False
    )
    mutation_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    # The mutation as sent.
    op: Mapped[str] = mapped_column(String(8), nullable=False)
    base_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    force: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    # The server's envelope when the push was judged, its version, the tenant's head then.
    server: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    server_version: Mapped[int | None] = mapped_column(BigInteger)
    head_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = _now()
    # Resolution: 'accepted_server' or 'reapplied' (then `resolved_version` is
    # the version the re-applied write got), and who resolved it.
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(Text)
    resolution: Mapped[str | None] = mapped_column(String(16))
    resolved_version: Mapped[int | None] = mapped_column(BigInteger)
