"""Authentication and key lifecycle: customers, workstations, API keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from api.auth.keys import NewKey, digests_match, generate_key, key_digest, parse_key_id
from api.auth.principal import Principal, Scope
from api.core.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from api.core.resources import Resources
from api.core.settings import Settings
from relational.database import unit_of_work
from relational.models import ApiKey, Customer, CustomerVersion, Workstation

INVALID_KEY = "invalid or inactive API key"


class KeyUsage:
    """`last_used_at` kept in memory and flushed in batches, not written per request."""

    def __init__(self) -> None:
        self._seen: dict[uuid.UUID, datetime] = {}

    def touch(self, key_uuid: uuid.UUID) -> None:
        self._seen[key_uuid] = datetime.now(UTC)

    async def flush(self, session: AsyncSession) -> int:
        seen, self._seen = self._seen, {}
        for key_uuid, when in seen.items():
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_uuid).values(last_used_at=when)
            )
        return len(seen)


async def flush_key_usage(resources: Resources) -> int:
    """Write the remembered `last_used_at` values (a background loop and shutdown)."""
    usage: KeyUsage | None = resources.extras.get("key_usage")
    if usage is None:
        return 0
    async with unit_of_work(resources.sessions) as session:
        return await usage.flush(session)


def _now() -> datetime:
    return datetime.now(UTC)


# One indexed lookup per request: the key with its customer's and workstation's
# state, as plain Core SQL (no ORM identity map on the hot path).
_AUTHENTICATE = text(
    "SELECT k.id, k.key_hash, k.scopes, k.customer_id, k.workstation_id, k.device_serial, "
    "k.revoked_at, k.expires_at, c.disabled_at, w.deactivated_at "
    "FROM api_keys k LEFT JOIN customers c ON c.id = k.customer_id "
    "LEFT JOIN workstations w ON w.id = k.workstation_id WHERE k.key_id = :key_id"
)


def admin_principal(settings: Settings, presented: str) -> Principal | None:
    """The admin principal if `presented` is the configured admin key (no database)."""
    pepper = settings.api_key_pepper.get_secret_value()
    admin_digest = key_digest(pepper, settings.admin_api_key.get_secret_value())
    if digests_match(admin_digest, pepper, presented):
        return Principal(key_uuid=None, scopes=frozenset({Scope.admin}), customer_id=None)
    return None


async def fetch_key(conn: AsyncConnection | AsyncSession, key_id: str) -> Any:
    """The key's row with its customer's and workstation's state, or None."""
    return (await conn.execute(_AUTHENTICATE, {"key_id": key_id})).first()


def verify_key(row: Any, pepper: str, presented: str) -> Principal:
    """The principal of a looked-up key if `presented` is it and it may be used, else 401."""
    if row is None:
        raise Unauthorized(INVALID_KEY)
    if (
        not digests_match(bytes(row.key_hash), pepper, presented)
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= _now())
        or row.disabled_at is not None
        or row.deactivated_at is not None
    ):
        raise Unauthorized(INVALID_KEY)
    return Principal(
        key_uuid=row.id,
        scopes=frozenset(Scope(s) for s in row.scopes),
        customer_id=row.customer_id,
        workstation_id=row.workstation_id,
        device_serial=row.device_serial,
    )


async def authenticate(
    conn: AsyncConnection | AsyncSession, settings: Settings, presented: str
) -> Principal:
    """Resolve an `X-API-Key` value to a principal, or raise 401, from the database.

    Checks revocation, expiry, a disabled customer and a deactivated workstation.
    Spaces and tabs around the value are not part of it (HTTP strips them; so
    does this). Requests go through the per-process cache (api/auth/cache.py).
    """
    presented = presented.strip(" \t")
    admin = admin_principal(settings, presented)
    if admin is not None:
        return admin
    key_id = parse_key_id(presented)
    if key_id is None:
        raise Unauthorized(INVALID_KEY)
    row = await fetch_key(conn, key_id)
    return verify_key(row, settings.api_key_pepper.get_secret_value(), presented)


async def _store_key(
    session: AsyncSession,
    settings: Settings,
    *,
    scope: Scope,
    name: str,
    customer_id: uuid.UUID | None,
    workstation_id: uuid.UUID | None = None,
    device_serial: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, NewKey]:
    new = generate_key(settings.api_key_pepper.get_secret_value())
    row = ApiKey(
        id=uuid.uuid4(),
        key_id=new.key_id,
        key_hash=new.digest,
        customer_id=customer_id,
        workstation_id=workstation_id,
        device_serial=device_serial,
        scopes=[scope.value],
        name=name,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row, new


async def create_customer(
    session: AsyncSession, settings: Settings, name: str
) -> tuple[Customer, NewKey]:
    """A new tenant, its version counter and its first customer-scoped key."""
    customer = Customer(id=uuid.uuid4(), name=name)
    session.add(customer)
    await session.flush()
    session.add(CustomerVersion(customer_id=customer.id, version=0))
    _, key = await _store_key(
        session, settings, scope=Scope.customer, name="initial", customer_id=customer.id
    )
    return customer, key


async def list_customers(
    session: AsyncSession, limit: int, after: uuid.UUID | None
) -> Sequence[Customer]:
    query = select(Customer).order_by(Customer.id).limit(limit)
    if after is not None:
        query = query.where(Customer.id > after)
    return (await session.scalars(query)).all()


async def get_customer(session: AsyncSession, customer_id: uuid.UUID) -> Customer:
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise NotFound("customer not found")
    return customer


async def set_customer_disabled(
    session: AsyncSession, customer_id: uuid.UUID, disabled: bool
) -> Customer:
    customer = await get_customer(session, customer_id)
    customer.disabled_at = _now() if disabled else None
    await session.flush()
    return customer


async def register_workstation(
    session: AsyncSession, settings: Settings, customer_id: uuid.UUID, name: str
) -> tuple[Workstation, NewKey]:
    workstation = Workstation(id=uuid.uuid4(), customer_id=customer_id, name=name)
    session.add(workstation)
    await session.flush()
    _, key = await _store_key(
        session,
        settings,
        scope=Scope.workstation,
        name=f"workstation {name}"[:200],  # the key name column holds 200
        customer_id=customer_id,
        workstation_id=workstation.id,
    )
    return workstation, key


async def list_workstations(session: AsyncSession, customer_id: uuid.UUID) -> Sequence[Workstation]:
    return (
        await session.scalars(
            select(Workstation)
            .where(Workstation.customer_id == customer_id)
            .order_by(Workstation.created_at, Workstation.id)
        )
    ).all()


async def get_workstation(
    session: AsyncSession, customer_id: uuid.UUID, workstation_id: uuid.UUID
) -> Workstation:
    workstation = await session.get(Workstation, workstation_id)
    if workstation is None or workstation.customer_id != customer_id:
        raise NotFound("workstation not found")
    return workstation


async def deactivate_workstation(
    session: AsyncSession, customer_id: uuid.UUID, workstation_id: uuid.UUID
) -> Workstation:
    workstation = await get_workstation(session, customer_id, workstation_id)
    if workstation.deactivated_at is None:
        workstation.deactivated_at = _now()
    await session.flush()
    return workstation


CREATABLE_SCOPES = (Scope.customer, Scope.analyst, Scope.device)


async def create_key(
    session: AsyncSession,
    settings: Settings,
    customer_id: uuid.UUID,
    *,
    scope: Scope,
    name: str,
    device_serial: str | None,
    expires_at: datetime | None,
) -> tuple[ApiKey, NewKey]:
    """A customer creates keys for itself: customer, analyst or device scope."""
    if scope not in CREATABLE_SCOPES:
        raise Invalid(
            f"scope {scope.value!r} cannot be created here; workstation keys come "
            "from /auth/workstations/register",
            details=[{"loc": ["body", "scope"], "msg": "not creatable"}],
        )
    if device_serial is not None and scope is not Scope.device:
        raise Invalid(
            "device_serial only applies to device keys",
            details=[{"loc": ["body", "device_serial"], "msg": "device keys only"}],
        )
    if expires_at is not None and expires_at <= _now():
        raise Invalid(
            "expires_at is in the past",
            details=[{"loc": ["body", "expires_at"], "msg": "must be in the future"}],
        )
    return await _store_key(
        session,
        settings,
        scope=scope,
        name=name,
        customer_id=customer_id,
        device_serial=device_serial,
        expires_at=expires_at,
    )


async def list_keys(session: AsyncSession, customer_id: uuid.UUID) -> Sequence[ApiKey]:
    return (
        await session.scalars(
            select(ApiKey)
            .where(ApiKey.customer_id == customer_id)
            .order_by(ApiKey.created_at, ApiKey.id)
        )
    ).all()


async def _tenant_key(session: AsyncSession, customer_id: uuid.UUID, key_uuid: uuid.UUID) -> ApiKey:
    key = await session.get(ApiKey, key_uuid)
    if key is None or key.customer_id != customer_id:
        raise NotFound("API key not found")
    return key


async def revoke_key(
    session: AsyncSession, customer_id: uuid.UUID, key_uuid: uuid.UUID, *, caller: uuid.UUID | None
) -> ApiKey:
    key = await _tenant_key(session, customer_id, key_uuid)
    if key.id == caller:
        raise Conflict(
            "a key cannot revoke itself; use another customer key", code="cannot_revoke_self"
        )
    if key.revoked_at is None:
        key.revoked_at = _now()
    await session.flush()
    return key


async def rotate_key(
    session: AsyncSession, settings: Settings, customer_id: uuid.UUID, key_uuid: uuid.UUID
) -> tuple[ApiKey, NewKey]:
    """Issue a replacement with the same scope and bindings; the old key stops at once."""
    old = await _tenant_key(session, customer_id, key_uuid)
    if old.revoked_at is not None:
        raise Conflict("the key is already revoked", code="key_revoked")
    if Scope.admin.value in old.scopes:
        raise Forbidden("admin keys are configured, not rotated")
    row, new = await _store_key(
        session,
        settings,
        scope=Scope(old.scopes[0]),
        name=old.name,
        customer_id=customer_id,
        workstation_id=old.workstation_id,
        device_serial=old.device_serial,
        expires_at=old.expires_at,
    )
    old.revoked_at = _now()
    old.replaced_by = row.id
    await session.flush()
    return row, new
