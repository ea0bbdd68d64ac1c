"""What a write through the journal answers: the entity written, the tombstones, a batch."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field


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


class BatchResult(BaseModel):
    count: int
    first_version: int
    last_version: int
    applied: bool
