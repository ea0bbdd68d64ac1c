"""registry: kits, drones, heartbeats, device events, update history

Revision ID: 0003_registry
Revises: 0002_blobs
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003_registry"
down_revision: str | None = "0002_blobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _tenant(ondelete: str, nullable: bool) -> sa.Column:
    return sa.Column(
        "customer_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("customers.id", ondelete=ondelete),
        nullable=nullable,
    )


def _drone() -> sa.Column:
    return sa.Column(
        "drone_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("drones.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "kits",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("serial", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200)),
        _tenant("SET NULL", True),
        sa.Column("claimed_at", TS),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("serial", name="uq_kits_serial"),
    )
    op.create_index("ix_kits_customer_serial", "kits", ["customer_id", "serial"])

    op.create_table(
        "drones",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("serial", sa.String(100), nullable=False),
        sa.Column("model", sa.String(100)),
        sa.Column("kit_id", pg.UUID(as_uuid=True), sa.ForeignKey("kits.id", ondelete="SET NULL")),
        _tenant("SET NULL", True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_changed_at", TS),
        sa.Column("liveness", sa.String(16), nullable=False),
        sa.Column("liveness_changed_at", TS),
        sa.Column("last_heartbeat_at", TS),
        sa.Column("last_heartbeat", pg.JSONB),
        sa.Column("firmware_version", sa.String(64)),
        sa.Column("claimed_at", TS),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("serial", name="uq_drones_serial"),
        sa.CheckConstraint("status IN ('active', 'maintenance', 'retired')", name="status"),
        sa.CheckConstraint(
            "liveness IN ('unknown', 'online', 'degraded', 'offline')", name="liveness"
        ),
        # Room on every page so the per-heartbeat UPDATE stays HOT.
        postgresql_with={"fillfactor": 70},
    )
    op.create_index("ix_drones_customer_serial", "drones", ["customer_id", "serial"])
    op.create_index("ix_drones_kit_id", "drones", ["kit_id"])

    op.create_table(
        "heartbeats",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        # No foreign key on the tenant: see relational/models/ Heartbeat.
        sa.Column("customer_id", pg.UUID(as_uuid=True), nullable=False),
        _drone(),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("cpu_percent", pg.REAL, nullable=False),
        sa.Column("memory_percent", pg.REAL, nullable=False),
        sa.Column("disk_percent", pg.REAL, nullable=False),
        sa.Column("temperature_c", pg.REAL, nullable=False),
        sa.Column("battery_percent", pg.REAL, nullable=False),
        sa.Column("firmware_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("uptime_seconds", sa.BigInteger),
        sa.Column("ip", pg.INET),
        sa.CheckConstraint("status IN ('healthy', 'degraded', 'failed')", name="status"),
    )
    op.create_index("ix_heartbeats_drone_received", "heartbeats", ["drone_id", "received_at"])
    op.create_index(
        "ix_heartbeats_received_at", "heartbeats", ["received_at"], postgresql_using="brin"
    )

    op.create_table(
        "device_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _tenant("CASCADE", False),
        _drone(),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("message", sa.String(500), nullable=False),
        sa.Column("details", pg.JSONB),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("severity IN ('info', 'warning', 'error')", name="severity"),
    )
    op.create_index("ix_device_events_drone_id", "device_events", ["drone_id", "id"])

    op.create_table(
        "update_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _tenant("CASCADE", False),
        _drone(),
        sa.Column("from_version", sa.String(64)),
        sa.Column("to_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("health_check_passed", sa.Boolean),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("error_message", sa.String(2000)),
        sa.Column("recorded_by", sa.Text),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("status IN ('success', 'failed', 'rolled_back')", name="status"),
        sa.CheckConstraint("finished_at IS NULL OR finished_at >= started_at", name="times"),
    )
    op.create_index("ix_update_history_drone_id", "update_history", ["drone_id", "id"])


def downgrade() -> None:
    for table in ("update_history", "device_events", "heartbeats", "drones", "kits"):
        op.drop_table(table)
