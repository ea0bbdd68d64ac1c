"""Kits and drones: preregistration (admin), claiming, assignment, renames.

Every change a customer can see goes through the journal in the same
transaction as the row change (`TenantTransaction.record`, api/journal/), so
the `:Kit`/`:Drone` projections in Neo4j follow and sync pulls hand them out.
A tenant's writers are serialised by taking its counter row first, like
`api.journal.writes.write`.
Preregistered hardware belongs to no tenant and is not journaled until claimed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.core.errors import Conflict, NotFound
from api.core.resources import Resources
from api.fleet import repository as repo
from api.fleet.schemas import (
    AdminKitOut,
    DroneOut,
    DronePreregister,
    KitOut,
    KitPage,
    KitPreregister,
)
from api.fleet.views import admin_kit_out, drone_data, drone_out, kit_data, kit_out
from api.journal.entities import EntityType
from api.journal.record import Change, Origin
from api.journal.transaction import TenantTransaction, tenant_transaction
from relational.models import Drone, Kit

log = structlog.get_logger("api.fleet.registry")

KIT_NOT_FOUND = "kit not found"
DRONE_NOT_FOUND = "drone not found"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TenantWrite:
    """One tenant's registry transaction, its counter row locked."""

    tx: TenantTransaction
    origin: Origin

    @property
    def session(self) -> AsyncSession:
        return self.tx.session

    @property
    def customer_id(self) -> uuid.UUID:
        return self.tx.customer_id

    async def journal(self, rows: Sequence[Kit | Drone]) -> None:
        """Journal the rows' current state as upserts and stamp their versions.

        Kits go before drones so a drone's IN_KIT link finds its `:Kit`.
        """
        ordered = sorted(rows, key=lambda row: isinstance(row, Drone))
        changes = [
            Change(EntityType.kit, row.id, "upsert", kit_data(row))
            if isinstance(row, Kit)
            else Change(EntityType.drone, row.id, "upsert", drone_data(row))
            for row in ordered
        ]
        versions = await self.tx.record(changes, self.origin)
        now = _now()
        for row, version in zip(ordered, versions, strict=True):
            row.version = version
            row.updated_at = now
        await self.session.flush()


@asynccontextmanager
async def tenant_write(resources: Resources, principal: Principal) -> AsyncIterator[TenantWrite]:
    """Lock the tenant's counter, yield, commit; then apply the journal to Neo4j.

    A Neo4j outage leaves the rows pending for the reconciler.
    """
    assert principal.customer_id is not None
    async with tenant_transaction(resources, principal.customer_id) as tx:
        yield TenantWrite(tx, principal.origin())


async def _kit_view(
    session: AsyncSession, kit: Kit, caller: uuid.UUID | None, interval: float
) -> KitOut:
    owner = kit.customer_id if kit.customer_id == caller else None
    drones = (await repo.drones_in_kits(session, [kit.id], owner))[kit.id]
    return kit_out(kit, drones, caller=caller, now=_now(), interval=interval)


# ------------------------------------------------------------------ admin
async def preregister_kit(
    session: AsyncSession, body: KitPreregister, interval: float
) -> AdminKitOut:
    """A kit and the drones packed in it, as at manufacture; 409 on a known serial."""
    taken = await repo.existing_serials(session, body.serial, [d.serial for d in body.drones])
    if taken["kits"] or taken["drones"]:
        raise Conflict("serial already registered", code="duplicate_serial", details=taken)
    kit = Kit(id=uuid.uuid4(), serial=body.serial, name=body.name, version=0)
    drones = [
        Drone(
            id=uuid.uuid4(),
            serial=d.serial,
            model=d.model,
            kit_id=kit.id,
            status="active",
            liveness="unknown",
            version=0,
        )
        for d in body.drones
    ]
    await _insert(session, kit, *drones)
    log.info("fleet.kit_preregistered", kit_serial=kit.serial, drones=len(drones))
    return admin_kit_out(kit, drones, now=_now(), interval=interval)


async def preregister_drone(
    session: AsyncSession, body: DronePreregister, interval: float
) -> DroneOut:
    """A drone, alone or packed in an unclaimed kit; 409 on a known serial."""
    kit = None
    if body.kit_serial is not None:
        kit = await repo.kit_by_serial(session, body.kit_serial, for_update=True)
        if kit is None:
            raise NotFound(KIT_NOT_FOUND)
        if kit.customer_id is not None:
            raise Conflict(
                "the kit is claimed already; the customer assigns drones to it", code="kit_claimed"
            )
    taken = await repo.existing_serials(session, None, [body.serial])
    if taken["drones"]:
        raise Conflict("serial already registered", code="duplicate_serial", details=taken)
    drone = Drone(
        id=uuid.uuid4(),
        serial=body.serial,
        model=body.model,
        kit_id=kit.id if kit else None,
        status="active",
        liveness="unknown",
        version=0,
    )
    await _insert(session, drone)
    return drone_out(drone, kit.serial if kit else None, now=_now(), interval=interval)


async def _insert(session: AsyncSession, *rows: Kit | Drone) -> None:
    # Kits first: drones reference them.
    for row in sorted(rows, key=lambda r: isinstance(r, Drone)):
        session.add(row)
        try:
            await session.flush()
        except IntegrityError as exc:  # a concurrent preregistration won the serial
            raise Conflict("serial already registered", code="duplicate_serial") from exc


async def admin_kit(session: AsyncSession, serial: str, interval: float) -> AdminKitOut:
    kit = await repo.kit_by_serial(session, serial)
    if kit is None:
        raise NotFound(KIT_NOT_FOUND)
    drones = (await repo.drones_in_kits(session, [kit.id], kit.customer_id))[kit.id]
    return admin_kit_out(kit, drones, now=_now(), interval=interval)


# ------------------------------------------------------------------ customers
async def lookup_kit(
    session: AsyncSession, customer_id: uuid.UUID, serial: str, interval: float
) -> KitOut:
    """The caller's kit, or an unclaimed kit (to confirm before claiming); another
    tenant's kit is indistinguishable from a missing one."""
    kit = await repo.kit_by_serial(session, serial)
    if kit is None or kit.customer_id not in (None, customer_id):
        raise NotFound(KIT_NOT_FOUND)
    return await _kit_view(session, kit, customer_id, interval)


async def list_kits(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    interval: float,
) -> KitPage:
    after = repo.decode_cursor(cursor, str)[0] if cursor else None
    kits = await repo.kits_page(session, customer_id, limit=limit, after=after)
    drones = await repo.drones_in_kits(session, [k.id for k in kits], customer_id)
    now = _now()
    items = [kit_out(k, drones[k.id], caller=customer_id, now=now, interval=interval) for k in kits]
    return KitPage(
        items=items, next_cursor=repo.encode_cursor(kits[-1].serial) if len(kits) == limit else None
    )


async def claim_kit(resources: Resources, principal: Principal, serial: str) -> KitOut:
    """Take an unclaimed kit and the drones packed in it into the caller's tenant.

    Claiming one's own kit again changes nothing; another tenant's kit is 404.
    """
    interval = resources.settings.heartbeat_interval_seconds
    async with tenant_write(resources, principal) as w:
        kit = await repo.kit_by_serial(w.session, serial, for_update=True)
        if kit is None or kit.customer_id not in (None, w.customer_id):
            raise NotFound(KIT_NOT_FOUND)
        if kit.customer_id is None:
            drones = list(await repo.unclaimed_drones_of_kit(w.session, kit.id))
            now = _now()
            kit.customer_id, kit.claimed_at = w.customer_id, now
            for drone in drones:
                drone.customer_id, drone.claimed_at = w.customer_id, now
            await w.journal([kit, *drones])
            for drone in drones:
                repo.add_event(
                    w.session,
                    drone,
                    "claim",
                    f"claimed with kit {kit.serial}",
                    details={"kit_id": str(kit.id), "kit_serial": kit.serial},
                )
            log.info("fleet.kit_claimed", kit_serial=kit.serial, drones=len(drones))
        return await _kit_view(w.session, kit, w.customer_id, interval)


async def rename_kit(
    resources: Resources, principal: Principal, serial: str, name: str | None
) -> KitOut:
    interval = resources.settings.heartbeat_interval_seconds
    async with tenant_write(resources, principal) as w:
        kit = await repo.tenant_kit(w.session, w.customer_id, serial, for_update=True)
        if kit is None:
            raise NotFound(KIT_NOT_FOUND)
        if kit.name != name:
            kit.name = name
            await w.journal([kit])
        return await _kit_view(w.session, kit, w.customer_id, interval)


async def assign_drone(
    resources: Resources, principal: Principal, kit_serial: str, drone_serial: str
) -> KitOut:
    """Put a drone in one of the caller's kits.

    The drone is the caller's (moved from another kit or from none), or an
    unclaimed drone not packed in a kit (a spare shipped alone), which this
    claims. Another tenant's drone is 404.
    """
    interval = resources.settings.heartbeat_interval_seconds
    async with tenant_write(resources, principal) as w:
        kit = await repo.tenant_kit(w.session, w.customer_id, kit_serial, for_update=True)
        if kit is None:
            raise NotFound(KIT_NOT_FOUND)
        drone = await repo.drone_by_serial(w.session, drone_serial, for_update=True)
        if drone is None or drone.customer_id not in (None, w.customer_id):
            raise NotFound(DRONE_NOT_FOUND)
        if drone.customer_id is None and drone.kit_id is not None:
            raise Conflict(
                "the drone is packed in an unclaimed kit; claim that kit",
                code="drone_in_unclaimed_kit",
            )
        if drone.kit_id != kit.id:
            previous = drone.kit_id
            if drone.customer_id is None:
                drone.customer_id, drone.claimed_at = w.customer_id, _now()
            drone.kit_id = kit.id
            await w.journal([drone])
            repo.add_event(
                w.session,
                drone,
                "kit",
                f"assigned to kit {kit.serial}",
                details={
                    "kit_id": str(kit.id),
                    "kit_serial": kit.serial,
                    "previous_kit_id": str(previous) if previous else None,
                },
            )
        return await _kit_view(w.session, kit, w.customer_id, interval)


async def unassign_drone(
    resources: Resources, principal: Principal, kit_serial: str, drone_serial: str
) -> KitOut:
    """Take a drone out of a kit; it stays in the tenant, in no kit."""
    interval = resources.settings.heartbeat_interval_seconds
    async with tenant_write(resources, principal) as w:
        kit = await repo.tenant_kit(w.session, w.customer_id, kit_serial, for_update=True)
        if kit is None:
            raise NotFound(KIT_NOT_FOUND)
        drone = await repo.tenant_drone(w.session, w.customer_id, drone_serial, for_update=True)
        if drone is None or drone.kit_id != kit.id:
            raise NotFound("drone not found in this kit")
        drone.kit_id = None
        await w.journal([drone])
        repo.add_event(
            w.session,
            drone,
            "kit",
            f"removed from kit {kit.serial}",
            details={"kit_id": None, "previous_kit_id": str(kit.id)},
        )
        return await _kit_view(w.session, kit, w.customer_id, interval)


async def change_model(
    resources: Resources, principal: Principal, serial: str, model: str | None
) -> DroneOut:
    interval = resources.settings.heartbeat_interval_seconds
    async with tenant_write(resources, principal) as w:
        drone = await repo.tenant_drone(w.session, w.customer_id, serial, for_update=True)
        if drone is None:
            raise NotFound(DRONE_NOT_FOUND)
        if drone.model != model:
            drone.model = model
            await w.journal([drone])
        row = await repo.drone_with_kit(w.session, w.customer_id, serial)
        assert row is not None
        return drone_out(row.Drone, row.kit_serial, now=_now(), interval=interval)
