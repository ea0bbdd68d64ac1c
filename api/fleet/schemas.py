"""Request and response bodies of the kit, drone and telemetry endpoints.

Requests are strict: unknown fields are refused, numbers must be numbers (a
string "50" or `true` is not a percentage), and every string has a limit.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    StringConstraints,
    model_validator,
)

from api.journal.storable import StorableDatetime, StorableModel

SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]*$"
Serial = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=SERIAL_PATTERN)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Model = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Firmware = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")
]
Percent = Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]

DroneStatus = Literal["active", "maintenance", "retired"]
ReportedStatus = Literal["healthy", "degraded", "failed"]
LivenessState = Literal["unknown", "online", "degraded", "offline"]
UpdateStatus = Literal["success", "failed", "rolled_back"]


# Zoned, offset within ±18:00, in range in UTC: the rule of every stored datetime.
AwareDatetime = StorableDatetime


class Strict(StorableModel):
    """A request body: unknown fields refused, every value storable (api/journal/storable.py)."""

    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ admin
class DroneSpec(Strict):
    serial: Serial = Field(examples=["OW-D-000123"])
    model: Model | None = Field(None, examples=["Perch Mk II"])


class KitPreregister(Strict):
    """A kit as it leaves manufacture, optionally with the drones packed in it."""

    serial: Serial = Field(examples=["OW-K-000042"])
    name: Name | None = Field(None, examples=["Kit 42"])
    drones: list[DroneSpec] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _distinct_serials(self) -> KitPreregister:
        serials = [d.serial for d in self.drones]
        if len(set(serials)) != len(serials):
            raise ValueError("drone serials repeat within the kit")
        return self


class DronePreregister(DroneSpec):
    kit_serial: Serial | None = Field(None, description="An unclaimed kit to pack it in.")


# ------------------------------------------------------------------ kits
class KitRef(BaseModel):
    id: uuid.UUID
    serial: str


class DroneBrief(BaseModel):
    id: uuid.UUID
    serial: str
    model: str | None
    status: DroneStatus
    liveness: LivenessState


class KitOut(BaseModel):
    id: uuid.UUID
    serial: str
    name: str | None
    claimed: bool = Field(
        description="True when it belongs to your tenant; an unclaimed kit "
        "is shown so you can confirm the serial before claiming it."
    )
    claimed_at: datetime | None
    version: int = Field(description="Tenant version of the kit's last change (0: unclaimed).")
    drones: list[DroneBrief]


class KitPage(BaseModel):
    items: list[KitOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class KitPatch(Strict):
    name: Name | None = Field(description="New name; null clears it.")


class AdminKitOut(KitOut):
    customer_id: uuid.UUID | None


# ------------------------------------------------------------------ drones
class HeartbeatIn(Strict):
    """What a drone reports every HEARTBEAT_INTERVAL_SECONDS."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "cpu_percent": 23.5,
                    "memory_percent": 41.0,
                    "disk_percent": 62.2,
                    "temperature_c": 48.3,
                    "battery_percent": 87.0,
                    "firmware_version": "2.4.1",
                    "status": "healthy",
                    "uptime_seconds": 86400,
                    "ip": "10.20.0.14",
                }
            ]
        },
    )

    cpu_percent: Percent
    memory_percent: Percent
    disk_percent: Percent
    temperature_c: float = Field(
        strict=True,
        ge=-40,
        le=125,
        allow_inf_nan=False,
        description="Board temperature in °C (-40 to 125).",
    )
    battery_percent: Percent
    firmware_version: Firmware
    status: ReportedStatus = Field(description="The drone's own view of its health.")
    uptime_seconds: int | None = Field(None, strict=True, ge=0, le=10 * 365 * 86400)
    ip: IPvAnyAddress | None = None


class HeartbeatSnapshot(BaseModel):
    received_at: datetime
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    temperature_c: float
    battery_percent: float
    firmware_version: str
    status: ReportedStatus
    uptime_seconds: int | None = None
    ip: str | None = None


class HeartbeatAccepted(BaseModel):
    drone_id: uuid.UUID
    serial: str
    received_at: datetime
    liveness: LivenessState
    reasons: list[str]
    heartbeat_interval_seconds: int = Field(description="Send the next one within this.")


class DroneOut(BaseModel):
    id: uuid.UUID
    serial: str
    model: str | None
    kit: KitRef | None
    status: DroneStatus = Field(description="Operator status, set by PATCH …/status.")
    status_changed_at: datetime | None
    liveness: LivenessState = Field(description="Computed now from the last heartbeat.")
    liveness_reasons: list[str]
    last_heartbeat_at: datetime | None
    firmware_version: str | None
    last_heartbeat: HeartbeatSnapshot | None
    version: int
    claimed_at: datetime | None
    created_at: datetime


class DronePage(BaseModel):
    items: list[DroneOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class DronePatch(Strict):
    model: Model | None = Field(description="New model; null clears it.")


class StatusChange(Strict):
    status: DroneStatus
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str = Field(description="liveness, status, firmware, update, kit or claim")
    severity: Literal["info", "warning", "error"]
    message: str
    details: dict[str, object] | None
    created_at: datetime


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class HeartbeatPage(BaseModel):
    items: list[HeartbeatSnapshot]
    next_cursor: str | None


class UpdateIn(Strict):
    """The outcome of one firmware update attempt."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "from_version": "2.4.1",
                    "to_version": "2.5.0",
                    "status": "success",
                    "health_check_passed": True,
                    "started_at": "2026-11-22T02:00:00Z",
                    "finished_at": "2026-11-22T02:04:10Z",
                }
            ]
        },
    )

    from_version: Firmware | None = None
    to_version: Firmware
    status: UpdateStatus
    health_check_passed: bool | None = Field(None, strict=True)
    started_at: AwareDatetime
    finished_at: AwareDatetime | None = None
    error_message: Annotated[str, StringConstraints(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _times(self) -> UpdateIn:
        if self.finished_at is not None and self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        return self


class UpdateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    from_version: str | None
    to_version: str
    status: UpdateStatus
    health_check_passed: bool | None
    started_at: datetime
    finished_at: datetime | None
    error_message: str | None
    created_at: datetime


class UpdatePage(BaseModel):
    items: list[UpdateOut]
    next_cursor: str | None
