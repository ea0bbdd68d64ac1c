"""baseline: customers, API keys, workstations, version counters, journal

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("disabled_at", TS),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "workstations",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "customer_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("deactivated_at", TS),
        sa.Column("last_pull_at", TS),
        sa.Column("last_pull_cursor", sa.BigInteger),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_workstations_customer_id", "workstations", ["customer_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False),
        sa.Column(
            "customer_id", pg.UUID(as_uuid=True), sa.ForeignKey("customers.id", ondelete="CASCADE")
        ),
        sa.Column(
            "workstation_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("workstations.id", ondelete="CASCADE"),
        ),
        sa.Column("device_serial", sa.String(100)),
        sa.Column("scopes", pg.ARRAY(sa.String(32)), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("revoked_at", TS),
        sa.Column("last_used_at", TS),
        sa.Column("replaced_by", pg.UUID(as_uuid=True)),
        sa.UniqueConstraint("key_id", name="uq_api_keys_key_id"),
    )
    op.create_index("ix_api_keys_customer_id", "api_keys", ["customer_id"])
    op.create_table(
        "customer_versions",
        sa.Column(
            "customer_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "sync_journal",
        sa.Column(
            "customer_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("entity_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("payload", pg.JSONB),
        sa.Column("workstation_id", pg.UUID(as_uuid=True)),
        sa.Column("mutation_id", sa.BigInteger),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("applied_at", TS),
        sa.UniqueConstraint(
            "workstation_id", "mutation_id", name="uq_sync_journal_workstation_id_mutation_id"
        ),
    )
    op.create_index(
        "ix_sync_journal_pending",
        "sync_journal",
        ["customer_id", "version"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_sync_journal_entity",
        "sync_journal",
        ["customer_id", "entity_type", "entity_id", "version"],
    )
    op.create_table(
        "sync_entities",
        sa.Column(
            "customer_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("entity_type", sa.String(32), primary_key=True),
        sa.Column("entity_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("payload", pg.JSONB),
        sa.Column("merged_into", pg.UUID(as_uuid=True)),
        sa.Column("updated_by", sa.Text),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("entity_id", name="uq_sync_entities_entity_id"),
    )
    op.create_index(
        "ix_sync_entities_customer_version", "sync_entities", ["customer_id", "version"]
    )


def downgrade() -> None:
    for table in (
        "sync_entities",
        "sync_journal",
        "customer_versions",
        "api_keys",
        "workstations",
        "customers",
    ):
        op.drop_table(table)
