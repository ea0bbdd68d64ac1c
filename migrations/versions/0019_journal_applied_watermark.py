"""journal_applied: a per-tenant watermark instead of marking each row applied

Every write of n changes inserted n `pending` journal rows (each also an
entry of the partial index `ix_sync_journal_pending`) and, once Neo4j had
them, updated the same n rows to `applied`: a new copy of each row, payload
included, two more index entries each, and as many dead rows for vacuum. For
a batch of 500 world nodes the marking alone was ~5 ms of Postgres CPU, on a
two-core machine where Postgres, the API and Neo4j share the cores (issue 15).

Rows are applied in version order, so "applied" is a prefix of each tenant's
journal: `journal_applied.through` says how far it reaches, and marking a
batch is one row's update. A row is pending when its stored state is
`pending` and its version is above the watermark; `failed` (Neo4j refused it)
and `applied` (set before this migration, or a superseded failed row) are
kept per row as before. Pending rows are found through the primary key,
from the watermark up.

The watermark starts just below each tenant's oldest pending row, or at its
head when none is pending. The downgrade marks every row below it applied
again and restores the index.

Revision ID: 0019_journal_applied_watermark
Revises: 0018_entity_venue_given
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0019_journal_applied_watermark"
down_revision: str | None = "0018_entity_venue_given"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journal_applied",
        sa.Column(
            "customer_id",
            UUID(as_uuid=True),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("through", sa.BigInteger(), nullable=False),
        sa.Column(
            "applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.execute(
        "INSERT INTO journal_applied (customer_id, through) "
        "SELECT cv.customer_id, COALESCE((SELECT min(j.version) - 1 FROM sync_journal j "
        "WHERE j.customer_id = cv.customer_id AND j.state = 'pending'), cv.version) "
        "FROM customer_versions cv"
    )
    op.drop_index("ix_sync_journal_pending", table_name="sync_journal")
    op.execute(
        "COMMENT ON COLUMN sync_journal.state IS 'pending: applied to Neo4j once version <= "
        "journal_applied.through; failed: Neo4j refused it; applied: settled (marked per row "
        "before migration 0019, or a superseded failed row)'"
    )


def downgrade() -> None:
    op.execute("COMMENT ON COLUMN sync_journal.state IS NULL")
    op.execute(
        "UPDATE sync_journal j SET state = 'applied', applied_at = a.applied_at "
        "FROM journal_applied a WHERE j.customer_id = a.customer_id "
        "AND j.state = 'pending' AND j.version <= a.through"
    )
    op.create_index(
        "ix_sync_journal_pending",
        "sync_journal",
        ["customer_id", "version"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_table("journal_applied")
