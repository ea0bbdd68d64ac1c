"""The apply epoch sequence: a fencing token for appliers of the journal

Each applier of a tenant's journal to Neo4j holds the tenant's advisory lock
on its Postgres connection. A Postgres restart drops that connection, and the
lock with it, while the applier's Neo4j transaction may still be in flight; a
second applier then applies newer rows (a delete), and the first one's older
batch lands after it, bringing the entity back (found by the chaos harness).
Every lock holder now draws a number from this sequence, and every apply
transaction raises the tenant's fence in Neo4j to it first, or is refused if
the fence is already higher (cypher/migrations/0002_apply_fence.cypher). A
sequence never hands out a number twice, crashes included.

Revision ID: 0015_apply_epoch
Revises: 0014_sync_conflicts
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015_apply_epoch"
down_revision: str | None = "0014_sync_conflicts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE journal_apply_epoch")


def downgrade() -> None:
    op.execute("DROP SEQUENCE journal_apply_epoch")
