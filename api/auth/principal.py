"""Who is calling: scopes, permissions and the tenant a request is bound to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from api.journal.record import Origin


class Scope(StrEnum):
    admin = "admin"
    customer = "customer"
    workstation = "workstation"
    device = "device"
    analyst = "analyst"


class Permission(StrEnum):
    admin = "admin"  # provision customers, preregister kits/drones, raw Cypher
    manage_keys = "manage_keys"  # create/revoke/rotate keys, register workstations
    read = "read"  # read the tenant's registry and graph
    write = "write"  # change the tenant's registry and graph
    sync = "sync"  # push / pull / bootstrap
    graph_query = "graph_query"  # analyst graph queries and named queries
    telemetry = "telemetry"  # heartbeats, perception ingest


SCOPE_PERMISSIONS: dict[Scope, frozenset[Permission]] = {
    Scope.admin: frozenset(Permission),
    Scope.customer: frozenset(
        {
            Permission.manage_keys,
            Permission.read,
            Permission.write,
            Permission.sync,
            Permission.graph_query,
            Permission.telemetry,
        }
    ),
    Scope.workstation: frozenset(
        {Permission.read, Permission.write, Permission.sync, Permission.graph_query}
    ),
    Scope.device: frozenset({Permission.telemetry}),
    Scope.analyst: frozenset({Permission.read, Permission.graph_query}),
}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. `customer_id` is None only for the admin."""

    key_uuid: uuid.UUID | None
    scopes: frozenset[Scope]
    customer_id: uuid.UUID | None
    workstation_id: uuid.UUID | None = None
    device_serial: str | None = None

    @cached_property  # a principal is immutable and may be cached for a minute
    def permissions(self) -> frozenset[Permission]:
        granted: set[Permission] = set()
        for scope in self.scopes:
            granted |= SCOPE_PERMISSIONS[scope]
        return frozenset(granted)

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def origin(self) -> Origin:
        """Who a write is by: the workstation of a workstation key, else the key."""
        if self.workstation_id is not None:
            return Origin(
                updated_by=f"workstation:{self.workstation_id}",
                workstation_id=self.workstation_id,
            )
        return Origin(updated_by=f"key:{self.key_uuid}")
