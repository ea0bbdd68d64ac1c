"""Response and request bodies shared by the venue, world-model and operation endpoints."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.pagination import id_cursor


class Written(BaseModel):
    """What a write returns: the entity's id, its new version and its state."""

    model_config = ConfigDict(extra="allow")
    id: uuid.UUID
    version: int
    applied: bool = Field(
        description="False if Neo4j was unreachable: the change is "
        "journaled and the reconciler will apply it."
    )


class Deleted(BaseModel):
    id: uuid.UUID
    version: int = Field(description="Version of the last tombstone written.")
    deleted: dict[str, int] = Field(description="Tombstones written, by entity type.")
    applied: bool


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = None


class BatchResult(BaseModel):
    count: int
    first_version: int
    last_version: int
    applied: bool


def page(items: list[dict[str, Any]], limit: int) -> Page:
    return Page(
        items=items, next_cursor=id_cursor(items[-1]["id"]) if len(items) == limit else None
    )
