"""sync: mutation outcomes (idempotent retries), pruning horizon, venue index

Revision ID: 0005_sync
Revises: 0003_registry
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0005_sync"
down_revision: str | None = "0003_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_mutations",
        sa.Column(
            "workstation_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("workstations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("mutation_id", sa.BigInteger, primary_key=True),
        sa.Column(
            "customer_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.BigInteger),
        sa.Column("result", pg.JSONB, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "ix_sync_mutations_applied",
        "sync_mutations",
        ["workstation_id", "version"],
        postgresql_where=sa.text("status = 'applied'"),
    )
    op.add_column(
        "customer_versions",
        sa.Column("pruned_through", sa.BigInteger, nullable=False, server_default="0"),
    )
    # Cascades (venue delete) and merges look entities up by their venue.
    op.create_index(
        "ix_sync_entities_venue",
        "sync_entities",
        ["customer_id", "entity_type", sa.text("(payload->>'venue_id')")],
        postgresql_where=sa.text("NOT deleted"),
    )


def downgrade() -> None:
    op.drop_index("ix_sync_entities_venue", table_name="sync_entities")
    op.drop_column("customer_versions", "pruned_through")
    op.drop_table("sync_mutations")
