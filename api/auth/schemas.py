"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.journal.storable import StorableDatetime, StorableModel

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Serial = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$",
    ),
]


class Strict(StorableModel):
    """A request body: unknown fields refused, every value storable (api/journal/storable.py)."""

    model_config = ConfigDict(extra="forbid")


class CustomerCreate(Strict):
    name: Name = Field(examples=["Harbour Security Ltd"])


class CustomerCreated(BaseModel):
    id: uuid.UUID
    name: str
    api_key: str = Field(description="Shown this once; store it now.")


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    disabled_at: datetime | None
    created_at: datetime


class CustomerPage(BaseModel):
    items: list[CustomerOut]
    next_cursor: str | None


class WorkstationRegister(Strict):
    name: Name = Field(examples=["ws-7 (north gate van)"])


class WorkstationCreated(BaseModel):
    id: uuid.UUID = Field(description="Use as `workstation_id` in sync calls.")
    name: str
    api_key: str = Field(description="Workstation-scoped key; shown this once.")


class WorkstationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    created_at: datetime
    deactivated_at: datetime | None
    last_pull_at: datetime | None


class KeyCreate(Strict):
    name: Name = Field(examples=["grafana read-only"])
    scope: Literal["customer", "analyst", "device"]
    device_serial: Serial | None = Field(
        None, description="Device keys only: the one drone serial this key may report for."
    )
    expires_at: StorableDatetime | None = None


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    key_id: str = Field(description="The public part of the key, `owk_<key_id>_…`.")
    name: str
    scopes: list[str]
    workstation_id: uuid.UUID | None
    device_serial: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    replaced_by: uuid.UUID | None


class KeyCreated(KeyOut):
    api_key: str = Field(description="Shown this once; store it now.")


class Me(BaseModel):
    customer_id: uuid.UUID | None
    scopes: list[str]
    permissions: list[str]
    workstation_id: uuid.UUID | None
    device_serial: str | None
