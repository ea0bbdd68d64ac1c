"""Authentication dependencies: `X-API-Key` → `Principal`, then permission checks."""

from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from api.auth.cache import auth_cache
from api.auth.principal import Permission, Principal
from api.auth.service import KeyUsage
from api.core.errors import Forbidden, Unauthorized, postgres_unavailable
from api.core.observability import raw_header
from relational.database import is_unreachable

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An Overwatch API key (`owk_…`), or the admin key.",
)


def key_usage(request: Request) -> KeyUsage:
    usage: KeyUsage = request.app.state.resources.extras.setdefault("key_usage", KeyUsage())
    return usage


_PRINCIPAL = "overwatch.principal"  # the request scope's key for its principal


async def authenticate(request: Request, presented: str | None) -> Principal:
    """The principal of the presented key, or 401 (at most once per request)."""
    known: Principal | None = request.scope.get(_PRINCIPAL)
    if known is not None:
        return known
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
    request.scope[_PRINCIPAL] = principal
    return principal


class KeyAuth(APIKeyHeader):
    """The `X-API-Key` security scheme as one dependency: the key's principal,
    refused 401 without a valid key and 403 without `permission` (or, with
    `tenant`, without a tenant).

    One dependency with no sub-dependencies: FastAPI solves every dependency
    level with generic machinery on each request (cache key, signature), and
    the three levels this replaced (permission → principal → header) were the
    largest share of an authenticated request's floor (issue 15). As an
    `APIKeyHeader` named like `api_key_header`, the OpenAPI document names the
    same `APIKeyHeader` scheme as before.
    """

    def __init__(self, permission: Permission | None = None, *, tenant: bool = False) -> None:
        super().__init__(
            name=api_key_header.model.name,
            scheme_name=api_key_header.scheme_name,
            description=api_key_header.model.description,
            auto_error=False,
        )
        self.permission = permission
        self.tenant = tenant

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        presented = raw_header(request.scope, b"x-api-key").decode("latin-1")
        principal = await authenticate(request, presented)
        if self.tenant and principal.customer_id is None:
            raise Forbidden("this endpoint acts inside a tenant; use a customer-bound key")
        if self.permission is not None and not principal.can(self.permission):
            raise Forbidden(f"this key lacks the {self.permission.value!r} permission")
        return principal


CurrentPrincipal = Annotated[Principal, Depends(KeyAuth())]


def require(permission: Permission) -> KeyAuth:
    """A dependency that admits callers holding `permission`."""
    return KeyAuth(permission)


def require_tenant(permission: Permission) -> KeyAuth:
    """Like `require`, for endpoints that act inside one tenant (admin has none)."""
    return KeyAuth(permission, tenant=True)


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
