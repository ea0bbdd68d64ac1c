"""Authentication dependencies: `X-API-Key` → `Principal`, then permission checks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from api.auth.cache import auth_cache
from api.auth.principal import Permission, Principal
from api.auth.service import KeyUsage
from api.core.errors import Forbidden, Unauthorized, postgres_unavailable
from relational.database import is_unreachable

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An Overwatch API key (`owk_…`), or the admin key.",
)


def key_usage(request: Request) -> KeyUsage:
    usage: KeyUsage = request.app.state.resources.extras.setdefault("key_usage", KeyUsage())
    return usage


async def current_principal(
    request: Request,
    presented: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    # Whitespace around a header value is not part of it (RFC 9110 §5.5), and
    # HTTP servers differ in what they strip: strip spaces and tabs on both
    # sides here, so a key is accepted or refused the same way on any server.
    presented = (presented or "").strip(" \t")
    if not presented:
        raise Unauthorized("missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
    # The process's key cache (api/auth/cache.py): no database round trip for
    # a key verified before; a miss takes a pooled connection for one statement
    # and returns it before the endpoint runs.
    try:
        principal = await auth_cache(request.app.state.resources).authenticate(presented)
    except Exception as exc:
        if is_unreachable(exc):
            raise postgres_unavailable() from exc
        raise
    if principal.key_uuid is not None:
        key_usage(request).touch(principal.key_uuid)
    structlog.contextvars.bind_contextvars(
        customer_id=str(principal.customer_id) if principal.customer_id else None,
        scopes=sorted(principal.scopes),
    )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(permission: Permission) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that admits callers holding `permission`."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.can(permission):
            raise Forbidden(f"this key lacks the {permission.value!r} permission")
        return principal

    return dependency


def require_tenant(permission: Permission) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """Like `require`, for endpoints that act inside one tenant (admin has none)."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.customer_id is None:
            raise Forbidden("this endpoint acts inside a tenant; use a customer-bound key")
        if not principal.can(permission):
            raise Forbidden(f"this key lacks the {permission.value!r} permission")
        return principal

    return dependency


AdminPrincipal = Annotated[Principal, Depends(require(Permission.admin))]
KeyManager = Annotated[Principal, Depends(require_tenant(Permission.manage_keys))]
Reader = Annotated[Principal, Depends(require_tenant(Permission.read))]
Writer = Annotated[Principal, Depends(require_tenant(Permission.write))]
Syncer = Annotated[Principal, Depends(require_tenant(Permission.sync))]
Analyst = Annotated[Principal, Depends(require_tenant(Permission.graph_query))]
Telemetry = Annotated[Principal, Depends(require_tenant(Permission.telemetry))]


def tenant_of(principal: Principal) -> uuid.UUID:
    """The tenant of a tenant-bound principal (checked by `require_tenant`)."""
    assert principal.customer_id is not None
    return principal.customer_id
