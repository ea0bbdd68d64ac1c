"""embeddings: the queue of venues and world nodes whose embedding may be stale

Revision ID: 0004_embeddings
Revises: 0003_registry
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004_embeddings"
down_revision: str | None = "0003_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # One row per journaled upsert, written in the journal's transaction; the
    # worker claims rows with FOR UPDATE SKIP LOCKED and deletes them when the
    # node's embedding matches its text. No unique key on purpose: an upsert
    # of an entity the worker is holding must never wait for the worker.
    op.create_table(
        "embedding_queue",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "customer_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("entity_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("enqueued_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("entity_type IN ('venue', 'world_node')", name="entity_type"),
    )
    op.create_index("ix_embedding_queue_customer_id", "embedding_queue", ["customer_id"])


def downgrade() -> None:
    op.drop_table("embedding_queue")
