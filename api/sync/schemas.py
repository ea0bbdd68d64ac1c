"""Wire shapes of the workstation sync protocol, version 1 (SYNC_PROTOCOL.md)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 2
# Version 2 adds scopes (`/sync/scope`); a version-1 push is served unchanged.
SUPPORTED_PROTOCOLS = (1, 2)
SYNC_TYPES = ("venue", "world_node", "world_edge", "operation", "kit", "drone")


class Mutation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mutation_id: int = Field(ge=1, le=2**62, description="Strictly increasing per workstation.")
    type: Literal["venue", "world_node", "world_edge", "operation", "kit", "drone"]
    id: uuid.UUID
    op: Literal["upsert", "delete"]
    base_version: int = Field(ge=0, le=2**62, description="Version last seen; 0 for new.")
    data: dict[str, Any] | None = Field(None, description="Complete state (upsert only).")
    force: bool = Field(False, description="Last writer wins: skip the conflict check.")


class PushRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workstation_id": "6c1f7a0e-2b9d-4c55-9a8e-1d2f3a4b5c6d",
                    "protocol_version": 1,
                    "mutations": [
                        {
                            "mutation_id": 41,
                            "type": "venue",
                            "id": "0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10",
                            "op": "upsert",
                            "base_version": 0,
                            "data": {"name": "Harbour Mall"},
                        },
                        {
                            "mutation_id": 42,
                            "type": "world_edge",
                            "id": "7d3e5b0c-9a57-4a8f-b1d2-3f7e9c1a2b44",
                            "op": "delete",
                            "base_version": 97,
                        },
                    ],
                }
            ]
        },
    )

    workstation_id: uuid.UUID
    protocol_version: int
    mutations: list[Mutation]


class MutationResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    mutation_id: int
    status: Literal["applied", "duplicate", "conflict", "rejected"]
    version: int | None = None
    server: dict[str, Any] | None = Field(None, description="The server's envelope (conflict).")
    error: dict[str, Any] | None = Field(None, description="`{code, message}` (rejected).")
    original_status: str | None = Field(
        None, description="For `duplicate`: the status the mutation got the first time."
    )
    merged: bool | None = Field(
        None,
        description="True when a venue edit was merged with "
        "concurrent edits of other fields instead of conflicting.",
    )
    conflict_id: uuid.UUID | None = Field(
        None,
        description="For `conflict` (and its `duplicate`): the conflict kept in the inbox "
        "(`GET /sync/conflicts/{id}`).",
    )


class PushResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {"mutation_id": 41, "status": "applied", "version": 813},
                        {
                            "mutation_id": 42,
                            "status": "conflict",
                            "server": {
                                "type": "world_edge",
                                "id": "7d3e5b0c-9a57-4a8f-b1d2-3f7e9c1a2b44",
                                "op": "delete",
                                "version": 99,
                                "updated_at": "2026-11-21T10:00:00.000000Z",
                                "updated_by": "workstation:5a0c2e9d-1f3b-4c7a-9e2d-8b6f4a1c3e70",
                            },
                        },
                    ],
                    "last_mutation_id": 42,
                    "write_checkpoint": 813,
                }
            ]
        }
    )

    results: list[MutationResult]
    last_mutation_id: int
    write_checkpoint: int


class PullResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "changes": [
                        {
                            "type": "venue",
                            "id": "0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10",
                            "op": "upsert",
                            "version": 812,
                            "updated_at": "2026-11-21T10:00:00.000000Z",
                            "updated_by": "workstation:6c1f7a0e-3b2d-4f8a-9c1e-2d7b5a4f6e31",
                            "data": {
                                "name": "Harbour Mall",
                                "address": None,
                                "description": None,
                                "tags": [],
                                "location": None,
                                "properties": {},
                            },
                            "blob_ids": [],
                        }
                    ],
                    "cursor": 900,
                    "has_more": True,
                    "frontier": 950,
                    "last_mutation_id": 42,
                }
            ]
        }
    )

    changes: list[dict[str, Any]]
    cursor: int
    has_more: bool
    frontier: int = Field(
        description="The tenant's committed head when the page was read: `has_more` false "
        "means the client has every change up to it. Never waits for Neo4j."
    )
    last_mutation_id: int


class ProjectionStatus(BaseModel):
    """How far the Neo4j projection (graph reads, search) is behind the journal.

    Sync never waits for it: pull and bootstrap answer up to `frontier`."""

    applied_through: int = Field(
        description="Every change at or below this version reached Neo4j (or failed)."
    )
    lag_versions: int = Field(description="`frontier` minus `applied_through`.")
    lag_seconds: float = Field(description="Age of the oldest change not yet in Neo4j (0: none).")
    failed: int = Field(
        description="Changes Neo4j refused (isolated; later changes keep being applied)."
    )


class ScopeSummary(BaseModel):
    venues: list[uuid.UUID] = Field(
        description="The venues the workstation syncs (its kits and drones always come along)."
    )
    scope_version: int


class WorkstationHealth(BaseModel):
    """One workstation's sync health, read from Postgres alone."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "6c1f7a0e-2b9d-4c55-9a8e-1d2f3a4b5c6d",
                    "name": "ws-7 (north gate van)",
                    "deactivated": False,
                    "last_push_at": "2026-11-21T09:58:12.120000+00:00",
                    "last_pull_at": "2026-11-21T10:00:03.004000+00:00",
                    "cursor": 900,
                    "head": 950,
                    "versions_behind": 50,
                    "cursor_expires_at": "2026-12-21T10:00:03.004000+00:00",
                    "days_until_expiry": 29.8,
                    "expired": False,
                    "scope": {
                        "venues": ["0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10"],
                        "scope_version": 3,
                    },
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    deactivated: bool
    last_push_at: str | None = Field(
        description="When the server processed this workstation's newest mutation (null: never)."
    )
    last_pull_at: str | None = Field(description="Its last pull (null: never pulled).")
    cursor: int | None = Field(description="The cursor its last pull answered (null: never).")
    head: int = Field(description="The tenant's committed head when this was read.")
    versions_behind: int | None = Field(
        description="`head` minus `cursor`: changes committed that it has not pulled yet "
        "(null: never pulled)."
    )
    cursor_expires_at: str | None = Field(
        description="The earliest moment `overwatch prune` run with TOMBSTONE_RETENTION_DAYS "
        "could remove a delete this workstation has not pulled, so that a pull from its cursor "
        "answers 410: (the earlier of its last pull and the journal time of the first change "
        "after its cursor) + TOMBSTONE_RETENTION_DAYS. For a scoped workstation, its cursor here "
        "is the lowest position one of its venues is read from (GREATEST(cursor, the venue's "
        "floor, when the venue was added)). Null when it never pulled or its cursor is 0 (a "
        "pull from 0 never expires)."
    )
    days_until_expiry: float | None = Field(
        description="Days from now to `cursor_expires_at`, 0 once that moment passed (the next "
        "prune may expire it); null when `cursor_expires_at` is."
    )
    expired: bool = Field(
        description="Its cursor is already below the tenant's pruned horizon: its next pull "
        "answers 410 `cursor_expired` and it must bootstrap again."
    )
    scope: ScopeSummary | None = Field(
        description="Its sync scope (protocol version 2); null when it syncs the whole tenant."
    )


class WorkstationHealthPage(BaseModel):
    items: list[WorkstationHealth]
    next_cursor: str | None


class SyncStatus(BaseModel):
    workstation_id: uuid.UUID | None
    last_mutation_id: int
    write_checkpoint: int
    frontier: int = Field(
        description="The tenant's committed head: every change up to it can be pulled now."
    )
    version: int = Field(description="The tenant's latest committed version (same as frontier).")
    pending: int = Field(description="Changes journaled but not yet applied to Neo4j.")
    last_pull_at: str | None
    last_pull_cursor: int | None
    counts: dict[str, int] = Field(description="Live entities per type, for a drift check.")
    projection: ProjectionStatus
    workstation: WorkstationHealth | None = Field(
        None,
        description="The workstation's sync health (the items of `GET /sync/workstations`); "
        "null when the call names no workstation.",
    )
