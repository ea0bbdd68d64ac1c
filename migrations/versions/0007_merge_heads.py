"""merge the embeddings branch and the sync/streams branch into one head

Revision ID: 0007_merge_heads
Revises: 0004_embeddings, 0006_streams
Create Date: 2026-11-22
"""

from collections.abc import Sequence

revision: str = "0007_merge_heads"
down_revision: str | tuple[str, ...] | None = ("0004_embeddings", "0006_streams")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to change: both branches were written in parallel from 0003."""


def downgrade() -> None:
    """Nothing to change."""
