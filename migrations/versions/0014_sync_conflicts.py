"""The conflict inbox: every `conflict` a push answered, kept until resolved or pruned

Protocol version 2 keeps what a workstation lost (docs/sync.md, "Conflict
inbox"): the mutation as sent (`op`, `base_version`, `data`, `force`), the
server's envelope at that moment with its version, and the tenant's head then.
An operator lists them (`GET /sync/conflicts`) and resolves each by accepting
the server's state or re-applying the losing data through the write path
(`resolution`, `resolved_by`, `resolved_version`: the version that write got).
One row per (workstation, mutation): a retried push answers `duplicate` and
adds none. Rows age out with the journal's retention (`overwatch prune`).

Revision ID: 0014_sync_conflicts
Revises: 0013_sync_scope
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014_sync_conflicts"
down_revision: str | None = "0013_sync_scope"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_conflicts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("workstation_id", sa.Uuid(), nullable=False),
        sa.Column("mutation_id", sa.BigInteger(), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("base_version", sa.BigInteger(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("force", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("server", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("server_version", sa.BigInteger(), nullable=True),
        sa.Column("head_version", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.Text(), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("resolved_version", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("op IN ('upsert', 'delete')", name="op"),
        sa.CheckConstraint("resolution IN ('accepted_server', 'reapplied')", name="resolution"),
        sa.CheckConstraint("(resolved_at IS NULL) = (resolution IS NULL)", name="resolved"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workstation_id"], ["workstations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workstation_id", "mutation_id"),
    )
    # The listing, newest first, all or open only; by workstation; by entity.
    op.create_index(
        "ix_sync_conflicts_listing", "sync_conflicts", ["customer_id", "created_at", "id"]
    )
    op.create_index(
        "ix_sync_conflicts_open",
        "sync_conflicts",
        ["customer_id", "created_at", "id"],
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index(
        "ix_sync_conflicts_workstation",
        "sync_conflicts",
        ["customer_id", "workstation_id", "created_at", "id"],
    )
    op.create_index(
        "ix_sync_conflicts_entity", "sync_conflicts", ["customer_id", "entity_id", "created_at"]
    )
    # Retention sweeps every tenant by age.
    op.create_index("ix_sync_conflicts_created_at", "sync_conflicts", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_conflicts_created_at", table_name="sync_conflicts")
    op.drop_index("ix_sync_conflicts_entity", table_name="sync_conflicts")
    op.drop_index("ix_sync_conflicts_workstation", table_name="sync_conflicts")
    op.drop_index("ix_sync_conflicts_open", table_name="sync_conflicts")
    op.drop_index("ix_sync_conflicts_listing", table_name="sync_conflicts")
    op.drop_table("sync_conflicts")
