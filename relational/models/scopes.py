"""Scoped sync (protocol v2): what each workstation syncs, and what left a venue.

A workstation that declares a scope (`PUT /sync/scope`) pulls only the
entities of its venues plus the tenant-wide kits and drones. Every synced
entity carries the venue it belongs to (`sync_entities.venue_id`, kept by a
trigger, migration 0013); these tables say, per workstation, which venues it
holds and since when, and per tenant, which entity left which venue at which
version (so a workstation holding that venue receives a removal).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from relational.models.base import Base, _now

# The pseudo-venue of tenant-wide entities (kits, drones): every scope holds it.
TENANT_WIDE = uuid.UUID(int=0)


class SyncScope(Base):
    """A workstation's declared scope: its version (bumped by every change that
    took effect) and the last request with its answer, so a retried PUT whose
    answer was lost gets the same answer."""

    __tablename__ = "sync_scopes"

    workstation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workstations.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    scope_version: Mapped[int] = mapped_column(Integer, nullable=False)
    last_request: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    last_answer: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    updated_at: Mapped[datetime] = _now()


class SyncScopeVenue(Base):
    """One venue of a workstation's scope (TENANT_WIDE included).

    `floor`: the workstation holds the current state of every entity of this
    venue at or below it, so pull never sends those again. `added`: the head
    when the venue joined the scope; tombstones and exits at or below it
    concern entities the workstation never held.
    """

    __tablename__ = "sync_scope_venues"

    workstation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workstations.id", ondelete="CASCADE"), primary_key=True
    )
    venue_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    floor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    added: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SyncScopeRemoval(Base):
    """An entity a workstation held in a venue it dropped from its scope, at the
    entity's version when dropped: pull hands it out as a removal in version order."""

    __tablename__ = "sync_scope_removals"

    workstation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workstations.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)


class SyncScopeExit(Base):
    """An entity that left `venue_id` (moved to another venue) at `version`:
    written by the `sync_entities` trigger whenever a row's venue changes."""

    __tablename__ = "sync_scope_exits"
    __table_args__ = (Index("ix_sync_scope_exits_version", "customer_id", "version"),)

    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    venue_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = _now()
