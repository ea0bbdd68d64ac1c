"""`/api/v1/kits`, `/api/v1/drones` and `/api/v1/admin/{kits,drones}`: the fleet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from api.auth.deps import AdminPrincipal, Reader, Telemetry, Writer, tenant_of
from api.core.deps import ResourcesDep, SessionDep
from api.fleet import registry, service
from api.fleet.liveness import Liveness
from api.fleet.schemas import (
    SERIAL_PATTERN,
    AdminKitOut,
    DroneOut,
    DronePage,
    DronePatch,
    DronePreregister,
    DroneStatus,
    EventPage,
    HeartbeatAccepted,
    HeartbeatIn,
    HeartbeatPage,
    KitOut,
    KitPage,
    KitPatch,
    KitPreregister,
    StatusChange,
    UpdateIn,
    UpdateOut,
    UpdatePage,
)
from api.journal.route import V1Route
from api.journal.storable import FilterDatetime

SerialPath = Annotated[str, Path(min_length=1, max_length=100, pattern=SERIAL_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[
    str | None, Query(max_length=500, description="`next_cursor` of the previous page")
]

admin_router = APIRouter(prefix="/admin", tags=["fleet admin"], route_class=V1Route)
kits_router = APIRouter(prefix="/kits", tags=["kits"], route_class=V1Route)
drones_router = APIRouter(prefix="/drones", tags=["drones"], route_class=V1Route)


# ------------------------------------------------------------------ admin
@admin_router.post(
    "/kits",
    status_code=status.HTTP_201_CREATED,
    response_model=AdminKitOut,
    summary="Preregister a kit, and the drones packed in it, by serial (admin)",
)
async def preregister_kit(
    body: KitPreregister,
    _: AdminPrincipal,
    session: SessionDep,
    resources: ResourcesDep,
) -> AdminKitOut:
    return await registry.preregister_kit(
        session, body, resources.settings.heartbeat_interval_seconds
    )


@admin_router.get(
    "/kits/{serial}",
    response_model=AdminKitOut,
    summary="Any kit by serial, with its owner (admin)",
)
async def admin_get_kit(
    serial: SerialPath,
    _: AdminPrincipal,
    session: SessionDep,
    resources: ResourcesDep,
) -> AdminKitOut:
    return await registry.admin_kit(session, serial, resources.settings.heartbeat_interval_seconds)


@admin_router.post(
    "/drones",
    status_code=status.HTTP_201_CREATED,
    response_model=DroneOut,
    summary="Preregister a drone, alone or in an unclaimed kit (admin)",
)
async def preregister_drone(
    body: DronePreregister,
    _: AdminPrincipal,
    session: SessionDep,
    resources: ResourcesDep,
) -> DroneOut:
    return await registry.preregister_drone(
        session, body, resources.settings.heartbeat_interval_seconds
    )


# ------------------------------------------------------------------ kits
@kits_router.get("", response_model=KitPage, summary="The tenant's kits with their drones")
async def list_kits(
    principal: Reader,
    session: SessionDep,
    resources: ResourcesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> KitPage:
    return await registry.list_kits(
        session,
        tenant_of(principal),
        limit=limit,
        cursor=cursor,
        interval=resources.settings.heartbeat_interval_seconds,
    )


@kits_router.get(
    "/{serial}",
    response_model=KitOut,
    summary="Look a kit up by exact serial: yours, or unclaimed (to confirm it)",
)
async def get_kit(
    serial: SerialPath,
    principal: Reader,
    session: SessionDep,
    resources: ResourcesDep,
) -> KitOut:
    return await registry.lookup_kit(
        session, tenant_of(principal), serial, resources.settings.heartbeat_interval_seconds
    )


@kits_router.post(
    "/{serial}/claim",
    response_model=KitOut,
    summary="Claim an unclaimed kit; its drones join your tenant",
)
async def claim_kit(serial: SerialPath, resources: ResourcesDep, principal: Writer) -> KitOut:
    return await registry.claim_kit(resources, principal, serial)


@kits_router.patch("/{serial}", response_model=KitOut, summary="Rename one of your kits")
async def rename_kit(
    serial: SerialPath, body: KitPatch, resources: ResourcesDep, principal: Writer
) -> KitOut:
    return await registry.rename_kit(resources, principal, serial, body.name)


@kits_router.post(
    "/{serial}/drones/{drone_serial}",
    response_model=KitOut,
    summary="Put a drone in the kit (yours, or an unclaimed spare)",
)
async def assign_drone(
    serial: SerialPath, drone_serial: SerialPath, resources: ResourcesDep, principal: Writer
) -> KitOut:
    return await registry.assign_drone(resources, principal, serial, drone_serial)


@kits_router.delete(
    "/{serial}/drones/{drone_serial}",
    response_model=KitOut,
    summary="Take a drone out of the kit (it stays yours)",
)
async def unassign_drone(
    serial: SerialPath, drone_serial: SerialPath, resources: ResourcesDep, principal: Writer
) -> KitOut:
    return await registry.unassign_drone(resources, principal, serial, drone_serial)


# ------------------------------------------------------------------ drones
@drones_router.post(
    "/{serial}/heartbeat",
    status_code=status.HTTP_201_CREATED,
    response_model=HeartbeatAccepted,
    summary="Report a heartbeat (device or customer key)",
)
async def heartbeat(
    serial: SerialPath, body: HeartbeatIn, resources: ResourcesDep, principal: Telemetry
) -> HeartbeatAccepted:
    return await service.record_heartbeat(resources, principal, serial, body)


@drones_router.get(
    "", response_model=DronePage, summary="The tenant's drones, filtered, by serial (keyset pages)"
)
async def list_drones(
    principal: Reader,
    session: SessionDep,
    resources: ResourcesDep,
    status_: Annotated[
        DroneStatus | None, Query(alias="status", description="Operator status")
    ] = None,
    liveness: Annotated[Liveness | None, Query()] = None,
    kit: Annotated[str | None, Query(max_length=100, description="Kit serial")] = None,
    firmware: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=100)] = None,
    last_seen_before: Annotated[FilterDatetime | None, Query()] = None,
    last_seen_after: Annotated[FilterDatetime | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> DronePage:
    return await service.list_drones(
        session,
        tenant_of(principal),
        interval=resources.settings.heartbeat_interval_seconds,
        limit=limit,
        cursor=cursor,
        status=status_,
        liveness=liveness,
        kit_serial=kit,
        firmware=firmware,
        model=model,
        last_seen_before=last_seen_before,
        last_seen_after=last_seen_after,
    )


@drones_router.get(
    "/{serial}",
    response_model=DroneOut,
    summary="One drone with its latest heartbeat and computed liveness",
)
async def get_drone(
    serial: SerialPath,
    principal: Reader,
    session: SessionDep,
    resources: ResourcesDep,
) -> DroneOut:
    return await service.get_drone(
        session,
        tenant_of(principal),
        serial,
        interval=resources.settings.heartbeat_interval_seconds,
    )


@drones_router.patch("/{serial}", response_model=DroneOut, summary="Change a drone's model")
async def patch_drone(
    serial: SerialPath, body: DronePatch, resources: ResourcesDep, principal: Writer
) -> DroneOut:
    return await registry.change_model(resources, principal, serial, body.model)


@drones_router.patch(
    "/{serial}/status",
    response_model=DroneOut,
    summary="Set the operator status: active, maintenance or retired",
)
async def set_status(
    serial: SerialPath,
    body: StatusChange,
    principal: Writer,
    session: SessionDep,
    resources: ResourcesDep,
) -> DroneOut:
    return await service.set_status(
        session, principal, serial, body, interval=resources.settings.heartbeat_interval_seconds
    )


@drones_router.get(
    "/{serial}/events", response_model=EventPage, summary="The drone's events, newest first"
)
async def list_events(
    serial: SerialPath,
    principal: Reader,
    session: SessionDep,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> EventPage:
    return await service.list_events(
        session, tenant_of(principal), serial, limit=limit, cursor=cursor, kind=kind
    )


@drones_router.get(
    "/{serial}/heartbeats",
    response_model=HeartbeatPage,
    summary="The drone's heartbeat history, newest first",
)
async def list_heartbeats(
    serial: SerialPath,
    principal: Reader,
    session: SessionDep,
    since: Annotated[FilterDatetime | None, Query()] = None,
    until: Annotated[FilterDatetime | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> HeartbeatPage:
    return await service.list_heartbeats(
        session, tenant_of(principal), serial, limit=limit, cursor=cursor, since=since, until=until
    )


@drones_router.post(
    "/{serial}/updates",
    status_code=status.HTTP_201_CREATED,
    response_model=UpdateOut,
    summary="Record a firmware update attempt",
)
async def record_update(
    serial: SerialPath,
    body: UpdateIn,
    principal: Writer,
    session: SessionDep,
) -> UpdateOut:
    return await service.record_update(session, principal, serial, body)


@drones_router.get(
    "/{serial}/updates",
    response_model=UpdatePage,
    summary="The drone's update history, newest first",
)
async def list_updates(
    serial: SerialPath,
    principal: Reader,
    session: SessionDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> UpdatePage:
    return await service.list_updates(
        session, tenant_of(principal), serial, limit=limit, cursor=cursor
    )
