"""Request and response bodies of the blob endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# The synced entity kinds a blob may belong to (values of `sync_entities.entity_type`).
OwnerType = Literal["venue", "world_node", "operation"]
BlobState = Literal["pending", "available"]

# A presigned POST carries one object, and S3 caps one POST at 5 GiB; the
# per-type limits of the `BLOB_CONTENT_TYPES` setting are usually far lower.
MAX_BLOB_SIZE = 5 * 2**30

ContentType = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        min_length=3,
        max_length=100,
        pattern=r"(?i)^[a-z0-9][a-z0-9.+_-]*/[a-z0-9][a-z0-9.+_-]*$",
    ),
]
Sha256Hex = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        pattern=r"(?i)^[0-9a-f]{64}$",
    ),
]


class UploadRequest(BaseModel):
    """What the client is about to upload (body of POST, query of the GET alias)."""

    model_config = ConfigDict(extra="forbid")

    content_type: ContentType = Field(
        examples=["image/jpeg"], description="One of the allowed types (`BLOB_CONTENT_TYPES`)."
    )
    size: int = Field(
        ge=1,
        le=MAX_BLOB_SIZE,
        examples=[48213],
        description="Exact size in bytes; the upload must match it.",
    )
    sha256: Sha256Hex | None = Field(
        None, description="Hex SHA-256 of the content; checked when the upload completes."
    )
    owner_type: OwnerType | None = Field(
        None, description="Kind of the synced entity the blob belongs to."
    )
    owner_id: uuid.UUID | None = Field(
        None, description="Id of an existing, not deleted entity of your tenant."
    )

    @model_validator(mode="after")
    def _owner_pair(self) -> UploadRequest:
        if (self.owner_type is None) != (self.owner_id is None):
            raise ValueError("owner_type and owner_id go together: give both or neither")
        return self


class BlobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    object_key: str
    content_type: str
    declared_size: int
    actual_size: int | None = Field(description="Size the store reported at completion.")
    sha256: str | None
    owner_type: OwnerType | None
    owner_id: uuid.UUID | None
    state: BlobState = Field(description="`pending` until `complete` confirms the upload.")
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class PresignedPost(BaseModel):
    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str] = Field(
        description="Send every field as a multipart form field, then the content last."
    )
    file_field: Literal["file"] = Field(
        default="file", description="Form field name of the content."
    )


class UploadTicket(BaseModel):
    blob_id: uuid.UUID
    object_key: str
    upload: PresignedPost
    expires_at: datetime
    expires_in: int = Field(description="Seconds the upload form stays valid.")
    blob: BlobOut


class DownloadTicket(BaseModel):
    blob_id: uuid.UUID
    method: Literal["GET"] = "GET"
    url: str
    expires_at: datetime
    expires_in: int
    content_type: str
    size: int


class BlobPage(BaseModel):
    items: list[BlobOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
