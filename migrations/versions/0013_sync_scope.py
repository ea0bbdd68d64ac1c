"""Scoped sync: each entity's venue, workstation scopes, removals and exits

Protocol version 2 lets a workstation sync a few venues instead of the whole
tenant (docs/sync.md, "Scopes"). Pull walks each venue of a scope in version
order, so every `sync_entities` row carries its venue (`venue_id`: its own id
for a venue, `venue_id` of its state for world nodes, edges and operations,
the nil UUID for tenant-wide kits and drones; a tombstone keeps the venue it
had). The envelope trigger computes it, so every writer keeps it right, and
writes a `sync_scope_exits` row whenever an entity's venue changes (a node
moved, a venue merged): a workstation holding the old venue then receives a
removal.

Revision ID: 0013_sync_scope
Revises: 0012_auth_notify
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013_sync_scope"
down_revision: str | None = "0012_auth_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NIL = "'00000000-0000-0000-0000-000000000000'::uuid"
UUID_TEXT = "'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'"

# The envelope trigger of 0010, plus the venue and the exit. A delete whose
# state names no venue keeps the venue the entity had. An exit is written only
# when a known venue changes (not when the column is first filled, below).
FUNCTION = f"""
CREATE OR REPLACE FUNCTION sync_entity_envelope() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  venue uuid;
BEGIN
  venue := CASE
    WHEN NEW.entity_type = 'venue' THEN NEW.entity_id
    WHEN NEW.entity_type IN ('kit', 'drone') THEN {NIL}
    WHEN NEW.payload->>'venue_id' ~ {UUID_TEXT} THEN (NEW.payload->>'venue_id')::uuid
    ELSE {NIL}
  END;
  IF TG_OP = 'UPDATE' AND venue = {NIL} AND NEW.deleted THEN
    venue := COALESCE(OLD.venue_id, venue);
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.venue_id IS NOT NULL AND OLD.venue_id <> venue THEN
    INSERT INTO sync_scope_exits (customer_id, venue_id, version, entity_id, entity_type)
    VALUES (NEW.customer_id, OLD.venue_id, NEW.version, NEW.entity_id, NEW.entity_type)
    ON CONFLICT DO NOTHING;
  END IF;
  NEW.venue_id := venue;
  NEW.envelope := '{{"type":"' || NEW.entity_type || '","id":"' || NEW.entity_id
    || '","op":"' || CASE WHEN NEW.deleted THEN 'delete' ELSE 'upsert' END
    || '","version":' || NEW.version
    || ',"updated_at":"'
    || to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    || '","updated_by":' || COALESCE(to_json(NEW.updated_by)::text, 'null')
    || CASE
         WHEN NEW.deleted AND NEW.merged_into IS NOT NULL
           THEN ',"merged_into":"' || NEW.merged_into || '"'
         WHEN NEW.deleted THEN ''
         ELSE ',"data":' || COALESCE(NEW.payload::text, 'null')
       END;
  RETURN NEW;
END $$
"""  # noqa: S608 (constant SQL)

# 0010's function, restored by downgrade.
OLD_FUNCTION = """
CREATE OR REPLACE FUNCTION sync_entity_envelope() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.envelope := '{"type":"' || NEW.entity_type || '","id":"' || NEW.entity_id
    || '","op":"' || CASE WHEN NEW.deleted THEN 'delete' ELSE 'upsert' END
    || '","version":' || NEW.version
    || ',"updated_at":"'
    || to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    || '","updated_by":' || COALESCE(to_json(NEW.updated_by)::text, 'null')
    || CASE
         WHEN NEW.deleted AND NEW.merged_into IS NOT NULL
           THEN ',"merged_into":"' || NEW.merged_into || '"'
         WHEN NEW.deleted THEN ''
         ELSE ',"data":' || COALESCE(NEW.payload::text, 'null')
       END;
  RETURN NEW;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "sync_scope_exits",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("venue_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id", "venue_id", "version", "entity_id"),
    )
    op.create_index("ix_sync_scope_exits_version", "sync_scope_exits", ["customer_id", "version"])
    op.create_table(
        "sync_scopes",
        sa.Column("workstation_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("scope_version", sa.Integer(), nullable=False),
        sa.Column("last_request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("last_answer", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workstation_id"], ["workstations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workstation_id"),
    )
    op.create_index("ix_sync_scopes_customer_id", "sync_scopes", ["customer_id"])
    op.create_table(
        "sync_scope_venues",
        sa.Column("workstation_id", sa.Uuid(), nullable=False),
        sa.Column("venue_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("floor", sa.BigInteger(), nullable=False),
        sa.Column("added", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workstation_id"], ["workstations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workstation_id", "venue_id"),
    )
    op.create_table(
        "sync_scope_removals",
        sa.Column("workstation_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workstation_id"], ["workstations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workstation_id", "version", "entity_id"),
    )
    op.add_column("sync_entities", sa.Column("venue_id", sa.Uuid(), nullable=True))
    op.execute(FUNCTION)
    op.execute("UPDATE sync_entities SET version = version")  # fills venue_id
    op.alter_column("sync_entities", "venue_id", nullable=False, server_default=sa.text(NIL))
    op.create_index(
        "ix_sync_entities_scope_version",
        "sync_entities",
        ["customer_id", "venue_id", "version"],
    )
    op.create_index(
        "ix_sync_entities_scope_live",
        "sync_entities",
        ["customer_id", "venue_id", "entity_type", "entity_id"],
        postgresql_where=sa.text("NOT deleted"),
    )


def downgrade() -> None:
    op.drop_index("ix_sync_entities_scope_live", table_name="sync_entities")
    op.drop_index("ix_sync_entities_scope_version", table_name="sync_entities")
    op.execute(OLD_FUNCTION)
    op.drop_column("sync_entities", "venue_id")
    op.drop_table("sync_scope_removals")
    op.drop_table("sync_scope_venues")
    op.drop_index("ix_sync_scopes_customer_id", table_name="sync_scopes")
    op.drop_table("sync_scopes")
    op.drop_index("ix_sync_scope_exits_version", table_name="sync_scope_exits")
    op.drop_table("sync_scope_exits")
