"""Request and answer of `PUT /sync/scope` (protocol version 2)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

MAX_SCOPE_VENUES = 1000

_VENUE = "0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10"


class ScopeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"venues": [_VENUE], "cursor": 812, "scope_version": 0}]},
    )

    venues: list[uuid.UUID] = Field(
        max_length=MAX_SCOPE_VENUES,
        description="The venues to sync (the tenant's kits and drones always come along). "
        "An empty list syncs kits and drones only.",
    )
    cursor: int = Field(
        ge=0,
        le=2**62,
        description="The client's pull cursor now: it holds every change of its current scope "
        "up to it (0 for a new workstation).",
    )
    scope_version: int = Field(
        0,
        ge=0,
        description="`scope_version` of the last scope answer the client holds (0 if none). "
        "When it is not the server's current one, the server does not trust `cursor` to "
        "describe the current scope and re-sends rather than skips.",
    )


class ScopeAnswer(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "venues": [_VENUE],
                    "scope_version": 1,
                    "cursor": 0,
                    "added": [_VENUE],
                    "dropped": [],
                    "removals": 0,
                }
            ]
        }
    )

    venues: list[uuid.UUID] | None = Field(
        description="The scope's venues, sorted; null: the whole tenant (unscoped)."
    )
    scope_version: int = Field(description="Send it back with the next scope change.")
    cursor: int = Field(
        description="Pull from here next (`since`): at or below the client's cursor. Added "
        "venues' state and removals arrive in that pull; nothing already held is sent again."
    )
    added: list[uuid.UUID] = Field(default_factory=list)
    dropped: list[uuid.UUID] = Field(default_factory=list)
    removals: int = Field(
        0, description="Removals waiting in pull for entities the client no longer syncs."
    )
