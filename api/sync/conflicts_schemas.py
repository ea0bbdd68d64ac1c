"""Wire shapes of the conflict inbox (`/sync/conflicts`, protocol version 2)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_WORKSTATION = "6c1f7a0e-2b9d-4c55-9a8e-1d2f3a4b5c6d"
_VENUE = "0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10"
_CONFLICT = "3f9a1c2e-7b4d-4e8f-a0b1-c2d3e4f5a6b7"

CONFLICT_EXAMPLE: dict[str, Any] = {
    "id": _CONFLICT,
    "workstation_id": _WORKSTATION,
    "entity_type": "venue",
    "entity_id": _VENUE,
    "mutation": {
        "mutation_id": 43,
        "type": "venue",
        "id": _VENUE,
        "op": "upsert",
        "base_version": 812,
        "data": {"name": "Harbour Mall (north wing)"},
        "force": False,
    },
    "server": {
        "type": "venue",
        "id": _VENUE,
        "op": "upsert",
        "version": 815,
        "updated_at": "2026-11-21T10:02:00.000000Z",
        "updated_by": "workstation:5a0c2e9d-1f3b-4c7a-9e2d-8b6f4a1c3e70",
        "data": {
            "name": "Harbour Mall (east)",
            "address": None,
            "description": None,
            "tags": [],
            "location": None,
            "properties": {},
        },
        "blob_ids": [],
    },
    "server_version": 815,
    "head_version": 820,
    "created_at": "2026-11-21T10:05:00.123456Z",
    "state": "open",
    "resolution": None,
    "resolved_at": None,
    "resolved_by": None,
    "resolved_version": None,
}
RESOLVED_EXAMPLE: dict[str, Any] = CONFLICT_EXAMPLE | {
    "state": "resolved",
    "resolution": "reapplied",
    "resolved_at": "2026-11-21T11:00:00.000000Z",
    "resolved_by": "key:9d2b6c1a-0e4f-4a7b-8c3d-5e6f7a8b9c0d",
    "resolved_version": 901,
}


class ConflictMutation(BaseModel):
    """The mutation as the workstation sent it: `data` is what lost."""

    mutation_id: int
    type: str
    id: uuid.UUID
    op: Literal["upsert", "delete"]
    base_version: int
    data: dict[str, Any] | None = None
    force: bool = False


class ConflictOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [CONFLICT_EXAMPLE]})

    id: uuid.UUID = Field(description="The conflict's id (`conflict_id` in the push result).")
    workstation_id: uuid.UUID = Field(description="The workstation whose push conflicted.")
    entity_type: str
    entity_id: uuid.UUID
    mutation: ConflictMutation
    server: dict[str, Any] | None = Field(
        description="The server's envelope of the entity when the push was judged "
        "(what the push answered as `server`)."
    )
    server_version: int | None = Field(description="`server.version`.")
    head_version: int = Field(description="The tenant's head version when the push was judged.")
    created_at: datetime
    state: Literal["open", "resolved"]
    resolution: Literal["accepted_server", "reapplied"] | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = Field(
        None,
        description="Who resolved it, as `updated_by` names writers: "
        "`key:<key id>` or `workstation:<id>`.",
    )
    resolved_version: int | None = Field(
        None,
        description="`reapplied`: the version the re-applied write got (its journal row); "
        "`accepted_server`: null.",
    )


class ConflictPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [CONFLICT_EXAMPLE], "next_cursor": None}]}
    )

    items: list[ConflictOut]
    next_cursor: str | None = Field(
        None, description="Pass back as `cursor` for the next page; null on the last page."
    )


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Literal["accept_server", "reapply"] = Field(
        description="`accept_server`: the server's state stands; nothing is written. "
        "`reapply`: the losing mutation is written again through the normal write path."
    )
    base_version: int | None = Field(
        None,
        ge=0,
        le=2**62,
        description="`reapply` only: the version the resolver saw (default: the conflict's "
        "`server_version`). If the entity has changed since, nothing is written: 409 "
        "`version_conflict` with the current envelope, and the conflict stays open.",
    )

    @model_validator(mode="after")
    def _base_for_reapply_only(self) -> ResolveRequest:
        if self.resolution == "accept_server" and self.base_version is not None:
            raise ValueError("base_version goes with `reapply` only")
        return self


RESOLVE_EXAMPLES: dict[str, Any] = {
    "accept_server": {
        "summary": "The server's state stands",
        "value": {"resolution": "accept_server"},
    },
    "reapply": {
        "summary": "Write the losing data again, if the entity is still as the conflict saw it",
        "value": {"resolution": "reapply"},
    },
    "reapply_at": {
        "summary": "Write the losing data again over the version the resolver has seen",
        "value": {"resolution": "reapply", "base_version": 815},
    },
}
