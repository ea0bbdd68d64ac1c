"""sync_entities read path: `has_blobs` flag, payload stored as json text

Pull and bootstrap build every envelope in Postgres. Two costs dominated:

- `blob_ids` took an index probe into `blobs` for every venue, world node and
  operation (5.5 of 13.6 ms for a page of 5,000). `has_blobs` is set, in the
  same transaction, whenever a blob of the entity becomes available or is
  moved onto it by a venue merge, and never cleared: it may only say "look",
  never hide a blob.
- `payload::text` of a jsonb value re-serialises it (3.8 ms a page). The
  payload is now `json`: Postgres checks it is valid JSON and keeps the text
  as written (the service writes it compact, from the validated model), so
  envelopes splice it as is. `->>` still works, and the venue index with it.
  The journal's payload stays jsonb.

Revision ID: 0009_entity_read_path
Revises: 0008_journal_index
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_entity_read_path"
down_revision: str | None = "0008_journal_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sync_entities",
        sa.Column("has_blobs", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.execute(
        "UPDATE sync_entities e SET has_blobs = true WHERE EXISTS ("
        " SELECT 1 FROM blobs b WHERE b.customer_id = e.customer_id AND b.owner_id = e.entity_id)"
    )
    op.execute("ALTER TABLE sync_entities ALTER COLUMN payload TYPE json USING payload::json")


def downgrade() -> None:
    op.execute("ALTER TABLE sync_entities ALTER COLUMN payload TYPE jsonb USING payload::jsonb")
    op.drop_column("sync_entities", "has_blobs")
