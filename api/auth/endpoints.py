"""`/api/v1/auth`: customers (admin), workstations and API keys (customer)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import service
from api.auth.cache import revocation_barrier
from api.auth.deps import AdminPrincipal, CurrentPrincipal, KeyManager, tenant_of
from api.auth.principal import Scope
from api.auth.schemas import (
    CustomerCreate,
    CustomerCreated,
    CustomerOut,
    CustomerPage,
    KeyCreate,
    KeyCreated,
    KeyOut,
    Me,
    WorkstationCreated,
    WorkstationOut,
    WorkstationRegister,
)
from api.core.deps import ResourcesDep, SessionDep
from api.core.pagination import Cursor, after_uuid, id_cursor
from api.core.resources import Resources
from api.journal.route import V1Route

router = APIRouter(prefix="/auth", tags=["auth"], route_class=V1Route)


async def _committed_everywhere(session: AsyncSession, resources: Resources) -> None:
    """Commit a revocation, then wait until every API process enforces it
    (api/auth/cache.py): its 2xx means the key is refused everywhere."""
    await session.commit()
    await revocation_barrier(resources)


@router.post(
    "/customers",
    status_code=status.HTTP_201_CREATED,
    response_model=CustomerCreated,
    summary="Provision a customer (admin); returns its first API key once",
)
async def create_customer(
    body: CustomerCreate, request: Request, session: SessionDep, _: AdminPrincipal
) -> CustomerCreated:
    customer, key = await service.create_customer(session, request.app.state.settings, body.name)
    return CustomerCreated(id=customer.id, name=customer.name, api_key=key.plaintext)


@router.get("/customers", response_model=CustomerPage, summary="List customers (admin)")
async def list_customers(
    session: SessionDep,
    _: AdminPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> CustomerPage:
    rows = await service.list_customers(session, limit, after_uuid(cursor))
    items = [CustomerOut.model_validate(r) for r in rows]
    return CustomerPage(
        items=items, next_cursor=id_cursor(rows[-1].id) if len(rows) == limit else None
    )


@router.get(
    "/customers/{customer_id}", response_model=CustomerOut, summary="Get a customer (admin)"
)
async def get_customer(
    customer_id: uuid.UUID, session: SessionDep, _: AdminPrincipal
) -> CustomerOut:
    return CustomerOut.model_validate(await service.get_customer(session, customer_id))


@router.post(
    "/customers/{customer_id}/disable",
    response_model=CustomerOut,
    summary="Disable a customer (admin); its keys stop working at once",
)
async def disable_customer(
    customer_id: uuid.UUID, session: SessionDep, resources: ResourcesDep, _: AdminPrincipal
) -> CustomerOut:
    customer = await service.set_customer_disabled(session, customer_id, True)
    await _committed_everywhere(session, resources)
    return CustomerOut.model_validate(customer)


@router.post(
    "/customers/{customer_id}/enable",
    response_model=CustomerOut,
    summary="Re-enable a disabled customer (admin)",
)
async def enable_customer(
    customer_id: uuid.UUID, session: SessionDep, _: AdminPrincipal
) -> CustomerOut:
    return CustomerOut.model_validate(
        await service.set_customer_disabled(session, customer_id, False)
    )


@router.post(
    "/workstations/register",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkstationCreated,
    summary="Register a workstation; returns its id and its own key once",
)
async def register_workstation(
    body: WorkstationRegister, request: Request, session: SessionDep, principal: KeyManager
) -> WorkstationCreated:
    workstation, key = await service.register_workstation(
        session, request.app.state.settings, tenant_of(principal), body.name
    )
    return WorkstationCreated(id=workstation.id, name=workstation.name, api_key=key.plaintext)


@router.get(
    "/workstations", response_model=list[WorkstationOut], summary="List the tenant's workstations"
)
async def list_workstations(session: SessionDep, principal: KeyManager) -> list[WorkstationOut]:
    rows = await service.list_workstations(session, tenant_of(principal))
    return [WorkstationOut.model_validate(r) for r in rows]


@router.post(
    "/workstations/{workstation_id}/deactivate",
    response_model=WorkstationOut,
    summary="Deactivate a workstation; its key stops working at once",
)
async def deactivate_workstation(
    workstation_id: uuid.UUID, session: SessionDep, resources: ResourcesDep, principal: KeyManager
) -> WorkstationOut:
    row = await service.deactivate_workstation(session, tenant_of(principal), workstation_id)
    await _committed_everywhere(session, resources)
    return WorkstationOut.model_validate(row)


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    summary="Create a customer, analyst or device key",
)
async def create_key(
    body: KeyCreate, request: Request, session: SessionDep, principal: KeyManager
) -> KeyCreated:
    row, key = await service.create_key(
        session,
        request.app.state.settings,
        tenant_of(principal),
        scope=Scope(body.scope),
        name=body.name,
        device_serial=body.device_serial,
        expires_at=body.expires_at,
    )
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), api_key=key.plaintext)


@router.get("/keys", response_model=list[KeyOut], summary="List the tenant's keys (no secrets)")
async def list_keys(session: SessionDep, principal: KeyManager) -> list[KeyOut]:
    return [
        KeyOut.model_validate(r) for r in await service.list_keys(session, tenant_of(principal))
    ]


@router.delete("/keys/{key_uuid}", response_model=KeyOut, summary="Revoke a key at once")
async def revoke_key(
    key_uuid: uuid.UUID, session: SessionDep, resources: ResourcesDep, principal: KeyManager
) -> KeyOut:
    row = await service.revoke_key(
        session, tenant_of(principal), key_uuid, caller=principal.key_uuid
    )
    await _committed_everywhere(session, resources)
    return KeyOut.model_validate(row)


@router.post(
    "/keys/{key_uuid}/rotate",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    summary="Replace a key: same scope, new secret; the old key stops at once",
)
async def rotate_key(
    key_uuid: uuid.UUID, request: Request, session: SessionDep, principal: KeyManager
) -> KeyCreated:
    row, key = await service.rotate_key(
        session, request.app.state.settings, tenant_of(principal), key_uuid
    )
    await _committed_everywhere(session, request.app.state.resources)
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), api_key=key.plaintext)


@router.get("/me", response_model=Me, summary="Who am I: the calling key's tenant and scopes")
async def me(principal: CurrentPrincipal) -> Me:
    return Me(
        customer_id=principal.customer_id,
        scopes=sorted(principal.scopes),
        permissions=sorted(principal.permissions),
        workstation_id=principal.workstation_id,
        device_serial=principal.device_serial,
    )
