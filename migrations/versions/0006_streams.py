"""streams: occupancy history, stream presence, liveness notifications

Revision ID: 0006_streams
Revises: 0005_sync
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0006_streams"
down_revision: str | None = "0005_sync"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

# Liveness transitions are written as device events by two statements in
# api/fleet (a heartbeat, the sweep). A row trigger publishes each one on
# commit, so subscribers of every API process hear about it without the fleet
# code knowing streams exist. It fires only for kind = 'liveness' (rare rows),
# never on an ordinary heartbeat.
NOTIFY_LIVENESS = """
CREATE FUNCTION overwatch_notify_liveness() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('overwatch_liveness', json_build_object(
        'customer_id', NEW.customer_id,
        'drone_id', NEW.drone_id,
        'serial', (SELECT serial FROM drones WHERE id = NEW.drone_id),
        'from', NEW.details->>'from',
        'to', NEW.details->>'to',
        'reasons', NEW.details->'reasons',
        'at', NEW.created_at)::text);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "occupancy_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("customer_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("zone_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("venue_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("camera_id", pg.UUID(as_uuid=True)),
        sa.Column("drone_serial", sa.String(64)),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("observed_at", TS, nullable=False),
        sa.Column("received_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("people", sa.Integer, nullable=False),
        sa.Column("free", sa.Integer, nullable=False),
        sa.Column("occupied", sa.Integer, nullable=False),
        sa.Column("detections", sa.Integer, nullable=False),
        sa.Column("detail", pg.JSONB),
    )
    op.create_index(
        "ix_occupancy_history_zone", "occupancy_history", ["customer_id", "zone_id", "observed_at"]
    )
    # Rows arrive in received_at order: a BRIN index finds the prunable range
    # for almost nothing per insert.
    op.create_index(
        "ix_occupancy_history_received_at",
        "occupancy_history",
        ["received_at"],
        postgresql_using="brin",
    )

    op.create_table(
        "stream_presence",
        sa.Column("process_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("ingest", sa.Integer, nullable=False),
        sa.Column("subscribers", sa.Integer, nullable=False),
        sa.Column("seen_at", TS, server_default=sa.func.now(), nullable=False),
    )

    op.execute(NOTIFY_LIVENESS)
    op.execute(
        "CREATE TRIGGER device_events_notify_liveness AFTER INSERT ON device_events "
        "FOR EACH ROW WHEN (NEW.kind = 'liveness') EXECUTE FUNCTION overwatch_notify_liveness()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS device_events_notify_liveness ON device_events")
    op.execute("DROP FUNCTION IF EXISTS overwatch_notify_liveness()")
    op.drop_table("stream_presence")
    op.drop_table("occupancy_history")
