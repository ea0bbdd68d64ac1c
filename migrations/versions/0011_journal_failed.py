"""sync_journal: a `failed` state for rows Neo4j refuses, with Neo4j's error

A row Neo4j refuses with a client error (a value it cannot store, a
constraint) used to stay `pending` forever and hold its tenant's projection
back. The applier now isolates such a row, marks it `failed` with the error
text and the time, and keeps applying the tenant's later rows
(api/journal/). `overwatch reconcile --retry-failed` puts failed rows back
to `pending`. The CHECK names every state; the partial index serves the
per-tenant failed counts of `/sync/status`, `/readyz` and `overwatch projection`.

Revision ID: 0011_journal_failed
Revises: 0010_entity_envelope
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_journal_failed"
down_revision: str | None = "0010_entity_envelope"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sync_journal", sa.Column("error", sa.Text(), nullable=True))
    op.add_column("sync_journal", sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_sync_journal_state"), "sync_journal", "state IN ('pending', 'applied', 'failed')"
    )
    op.create_index(
        "ix_sync_journal_failed",
        "sync_journal",
        ["customer_id", "version"],
        postgresql_where=sa.text("state = 'failed'"),
    )


def downgrade() -> None:
    op.execute("UPDATE sync_journal SET state = 'pending' WHERE state = 'failed'")
    op.drop_index("ix_sync_journal_failed", table_name="sync_journal")
    op.drop_constraint("ck_sync_journal_state", "sync_journal", type_="check")
    op.drop_column("sync_journal", "failed_at")
    op.drop_column("sync_journal", "error")
