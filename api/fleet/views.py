"""Response bodies built from registry rows, with liveness computed at read time."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from api.fleet.liveness import assess
from api.fleet.schemas import (
    AdminKitOut,
    DroneBrief,
    DroneOut,
    HeartbeatSnapshot,
    KitOut,
    KitRef,
)
from api.journal.entities import DroneData, KitData, canonical
from relational.models import Drone, Kit


def kit_data(kit: Kit) -> dict[str, Any]:
    """The journal payload of a kit (its `:Kit` projection)."""
    return canonical(KitData(serial=kit.serial, name=kit.name))


def drone_data(drone: Drone) -> dict[str, Any]:
    """The journal payload of a drone (its `:Drone` projection and IN_KIT link)."""
    return canonical(DroneData(serial=drone.serial, kit_id=drone.kit_id, model=drone.model))


def drone_brief(drone: Drone, now: datetime, interval: float) -> DroneBrief:
    state = assess(
        drone.last_heartbeat_at, drone.last_heartbeat, now=now, interval_seconds=interval
    ).state
    return DroneBrief(
        id=drone.id, serial=drone.serial, model=drone.model, status=drone.status, liveness=state
    )


def kit_out(
    kit: Kit, drones: list[Drone], *, caller: uuid.UUID | None, now: datetime, interval: float
) -> KitOut:
    return KitOut(
        id=kit.id,
        serial=kit.serial,
        name=kit.name,
        claimed=kit.customer_id is not None and kit.customer_id == caller,
        claimed_at=kit.claimed_at,
        version=kit.version,
        drones=[drone_brief(d, now, interval) for d in drones],
    )


def admin_kit_out(kit: Kit, drones: list[Drone], *, now: datetime, interval: float) -> AdminKitOut:
    return AdminKitOut(
        **kit_out(kit, drones, caller=kit.customer_id, now=now, interval=interval).model_dump(),
        customer_id=kit.customer_id,
    )


def drone_out(drone: Drone, kit_serial: str | None, *, now: datetime, interval: float) -> DroneOut:
    verdict = assess(
        drone.last_heartbeat_at, drone.last_heartbeat, now=now, interval_seconds=interval
    )
    snapshot = (
        HeartbeatSnapshot.model_validate(drone.last_heartbeat) if drone.last_heartbeat else None
    )
    kit = KitRef(id=drone.kit_id, serial=kit_serial) if drone.kit_id and kit_serial else None
    return DroneOut(
        id=drone.id,
        serial=drone.serial,
        model=drone.model,
        kit=kit,
        status=drone.status,
        status_changed_at=drone.status_changed_at,
        liveness=verdict.state.value,
        liveness_reasons=verdict.reasons,
        last_heartbeat_at=drone.last_heartbeat_at,
        firmware_version=drone.firmware_version,
        last_heartbeat=snapshot,
        version=drone.version,
        claimed_at=drone.claimed_at,
        created_at=drone.created_at,
    )
