"""blobs: presigned-upload records linked to synced graph entities

Revision ID: 0002_blobs
Revises: 0001_baseline
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002_blobs"
down_revision: str | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "customer_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("object_key", sa.String(300), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("declared_size", sa.BigInteger, nullable=False),
        sa.Column("actual_size", sa.BigInteger),
        sa.Column("sha256", sa.String(64)),
        sa.Column("owner_type", sa.String(32)),
        sa.Column("owner_id", pg.UUID(as_uuid=True)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("completed_at", TS),
        sa.UniqueConstraint("object_key", name="uq_blobs_object_key"),
        # Names are completed by the naming convention: ck_blobs_<name>.
        sa.CheckConstraint("state IN ('pending', 'available')", name="state"),
        sa.CheckConstraint("declared_size >= 0", name="declared_size"),
        sa.CheckConstraint("(owner_type IS NULL) = (owner_id IS NULL)", name="owner"),
    )
    op.create_index("ix_blobs_customer_created", "blobs", ["customer_id", "created_at", "id"])
    op.create_index(
        "ix_blobs_customer_owner",
        "blobs",
        ["customer_id", "owner_id"],
        postgresql_where=sa.text("owner_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("blobs")
