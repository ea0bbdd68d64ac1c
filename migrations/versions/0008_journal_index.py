"""drop ix_sync_journal_entity: no query needs it, and it cost every journaled row

Every reader of sync_journal filters on (customer_id, version) (the primary
key) or on pending rows (ix_sync_journal_pending); the merge rule's base-state
lookup names the version too. The index was written 500 times per batch.

Revision ID: 0008_journal_index
Revises: 0007_merge_heads
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_journal_index"
down_revision: str | None = "0007_merge_heads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_sync_journal_entity", table_name="sync_journal")


def downgrade() -> None:
    op.create_index(
        "ix_sync_journal_entity",
        "sync_journal",
        ["customer_id", "entity_type", "entity_id", "version"],
    )
