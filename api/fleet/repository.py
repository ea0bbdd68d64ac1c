"""Kit, drone and telemetry queries. Nothing here commits.

Every query that returns customer data filters on the tenant. The two that do
not (`kit_by_serial`, `drone_by_serial`) serve preregistration and claiming,
where the caller must see unclaimed hardware; their callers check ownership.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, exists, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from api.core import pagination
from relational.models import DeviceEvent, Drone, Heartbeat, Kit, UpdateRecord

# ------------------------------------------------------------------ cursors
# The one cursor codec (api/core/pagination.py), under the names this module's callers use.
encode_cursor = pagination.encode_cursor
decode_cursor = pagination.decode_cursor


# ------------------------------------------------------------------ kits
async def kit_by_serial(
    session: AsyncSession, serial: str, *, for_update: bool = False
) -> Kit | None:
    """Any kit, claimed or not (preregistration and claiming only)."""
    query = select(Kit).where(Kit.serial == serial)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def tenant_kit(
    session: AsyncSession, customer_id: uuid.UUID, serial: str, *, for_update: bool = False
) -> Kit | None:
    query = select(Kit).where(Kit.customer_id == customer_id, Kit.serial == serial)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def kits_page(
    session: AsyncSession, customer_id: uuid.UUID, *, limit: int, after: str | None
) -> Sequence[Kit]:
    query = select(Kit).where(Kit.customer_id == customer_id)
    if after is not None:
        query = query.where(Kit.serial > after)
    return (await session.scalars(query.order_by(Kit.serial).limit(limit))).all()


async def drones_in_kits(
    session: AsyncSession, kit_ids: Sequence[uuid.UUID], customer_id: uuid.UUID | None
) -> dict[uuid.UUID, list[Drone]]:
    """The drones packed in each kit (`customer_id` None: the unclaimed ones)."""
    if not kit_ids:
        return {}
    owner = Drone.customer_id.is_(None) if customer_id is None else Drone.customer_id == customer_id
    rows = await session.scalars(
        select(Drone).where(Drone.kit_id.in_(kit_ids), owner).order_by(Drone.serial)
    )
    grouped: dict[uuid.UUID, list[Drone]] = {kit_id: [] for kit_id in kit_ids}
    for drone in rows:
        assert drone.kit_id is not None
        grouped[drone.kit_id].append(drone)
    return grouped


async def unclaimed_drones_of_kit(session: AsyncSession, kit_id: uuid.UUID) -> Sequence[Drone]:
    """The kit's unclaimed drones, locked for the claim."""
    return (
        await session.scalars(
            select(Drone)
            .where(Drone.kit_id == kit_id, Drone.customer_id.is_(None))
            .order_by(Drone.serial)
            .with_for_update()
        )
    ).all()


# ------------------------------------------------------------------ drones
async def drone_by_serial(
    session: AsyncSession, serial: str, *, for_update: bool = False
) -> Drone | None:
    """Any drone, claimed or not (preregistration and assignment only)."""
    query = select(Drone).where(Drone.serial == serial)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def tenant_drone(
    session: AsyncSession, customer_id: uuid.UUID, serial: str, *, for_update: bool = False
) -> Drone | None:
    query = select(Drone).where(Drone.customer_id == customer_id, Drone.serial == serial)
    if for_update:
        query = query.with_for_update(of=Drone)
    return (await session.execute(query)).scalar_one_or_none()


async def existing_serials(
    session: AsyncSession, kit_serial: str | None, drone_serials: Sequence[str]
) -> dict[str, list[str]]:
    """Which of these serials are registered already (for a 409 naming them)."""
    taken: dict[str, list[str]] = {"kits": [], "drones": []}
    if kit_serial is not None and await session.scalar(
        select(exists().where(Kit.serial == kit_serial))
    ):
        taken["kits"].append(kit_serial)
    if drone_serials:
        taken["drones"] = list(
            (
                await session.scalars(
                    select(Drone.serial)
                    .where(Drone.serial.in_(drone_serials))
                    .order_by(Drone.serial)
                )
            ).all()
        )
    return taken


def drone_with_kit_query(customer_id: uuid.UUID) -> Any:
    """Drones of a tenant with their kit's id and serial (no history join)."""
    return (
        select(Drone, Kit.serial.label("kit_serial"))
        .outerjoin(Kit, Kit.id == Drone.kit_id)
        .where(Drone.customer_id == customer_id)
    )


async def drone_with_kit(
    session: AsyncSession, customer_id: uuid.UUID, serial: str
) -> Row[Any] | None:
    query = drone_with_kit_query(customer_id).where(Drone.serial == serial)
    return (await session.execute(query)).first()


# ------------------------------------------------------------------ history
async def events_page(
    session: AsyncSession,
    customer_id: uuid.UUID,
    drone_id: uuid.UUID,
    *,
    limit: int,
    before: int | None,
    kind: str | None,
) -> Sequence[DeviceEvent]:
    """Newest first, keyset on the event id."""
    query = select(DeviceEvent).where(
        DeviceEvent.customer_id == customer_id, DeviceEvent.drone_id == drone_id
    )
    if kind is not None:
        query = query.where(DeviceEvent.kind == kind)
    if before is not None:
        query = query.where(DeviceEvent.id < before)
    return (await session.scalars(query.order_by(DeviceEvent.id.desc()).limit(limit))).all()


async def updates_page(
    session: AsyncSession,
    customer_id: uuid.UUID,
    drone_id: uuid.UUID,
    *,
    limit: int,
    before: int | None,
) -> Sequence[UpdateRecord]:
    query = select(UpdateRecord).where(
        UpdateRecord.customer_id == customer_id, UpdateRecord.drone_id == drone_id
    )
    if before is not None:
        query = query.where(UpdateRecord.id < before)
    return (await session.scalars(query.order_by(UpdateRecord.id.desc()).limit(limit))).all()


async def heartbeats_page(
    session: AsyncSession,
    customer_id: uuid.UUID,
    drone_id: uuid.UUID,
    *,
    limit: int,
    before: tuple[datetime, int] | None,
    since: datetime | None,
    until: datetime | None,
) -> Sequence[Heartbeat]:
    """Newest first, keyset on (received_at, id), served by (drone_id, received_at)."""
    query = select(Heartbeat).where(
        Heartbeat.drone_id == drone_id, Heartbeat.customer_id == customer_id
    )
    if since is not None:
        query = query.where(Heartbeat.received_at >= since)
    if until is not None:
        query = query.where(Heartbeat.received_at < until)
    if before is not None:
        query = query.where(tuple_(Heartbeat.received_at, Heartbeat.id) < tuple_(*before))
    query = query.order_by(Heartbeat.received_at.desc(), Heartbeat.id.desc()).limit(limit)
    return (await session.scalars(query)).all()


def add_event(
    session: AsyncSession,
    drone: Drone,
    kind: str,
    message: str,
    *,
    severity: str = "info",
    details: dict[str, Any] | None = None,
) -> None:
    assert drone.customer_id is not None
    session.add(
        DeviceEvent(
            customer_id=drone.customer_id,
            drone_id=drone.id,
            kind=kind,
            severity=severity,
            message=message[:500],
            details=details,
        )
    )
