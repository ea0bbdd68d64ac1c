"""Drone liveness: one rule, computed from the age of the last heartbeat.

With `interval` = HEARTBEAT_INTERVAL_SECONDS and `age` = now - last heartbeat:

* `unknown`  — the drone never sent a heartbeat;
* `offline`  — age > 1.5 x interval (the heartbeat after next is overdue);
* `degraded` — alive but not well: the heartbeat is late (age > interval), or
  the last heartbeat reported `degraded`/`failed`, a temperature of at least
  HIGH_TEMPERATURE_C, or a battery at or below LOW_BATTERY_PERCENT;
* `online`   — otherwise.

Liveness is separate from the operator status (active, maintenance, retired).
The state is stored on the drone row so transitions become device events: a
heartbeat records its own transition as it arrives, and `liveness_sweep`
(a background loop) records the ones caused by silence. Every function takes
`now`, so tests move time instead of sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import ColumnElement, Float, case, cast, or_, text

from api.core.resources import Resources
from relational.models import Drone

log = structlog.get_logger("api.fleet.liveness")

HIGH_TEMPERATURE_C = 75.0
LOW_BATTERY_PERCENT = 15.0
OFFLINE_FACTOR = 1.5
UNWELL_REPORTS = ("degraded", "failed")

LIVENESS_TRANSITIONS = Counter(
    "overwatch_drone_liveness_transitions_total",
    "Drone liveness transitions recorded, by new state.",
    ["state"],
)


class Liveness(StrEnum):
    unknown = "unknown"
    online = "online"
    degraded = "degraded"
    offline = "offline"


@dataclass(frozen=True)
class Assessment:
    state: Liveness
    reasons: list[str] = field(default_factory=list)


def thresholds(now: datetime, interval_seconds: float) -> tuple[datetime, datetime]:
    """(late_before, offline_before): heartbeats older than these are late / lost."""
    return (
        now - timedelta(seconds=interval_seconds),
        now - timedelta(seconds=interval_seconds * OFFLINE_FACTOR),
    )


def report_reasons(report: dict[str, Any] | None) -> list[str]:
    """Why a heartbeat's own content makes a drone degraded (empty: it does not)."""
    if not report:
        return []
    reasons = []
    if report.get("status") in UNWELL_REPORTS:
        reasons.append(f"reported_{report['status']}")
    temperature = report.get("temperature_c")
    if temperature is not None and temperature >= HIGH_TEMPERATURE_C:
        reasons.append("high_temperature")
    battery = report.get("battery_percent")
    if battery is not None and battery <= LOW_BATTERY_PERCENT:
        reasons.append("low_battery")
    return reasons


def assess(
    last_heartbeat_at: datetime | None,
    report: dict[str, Any] | None,
    *,
    now: datetime,
    interval_seconds: float,
) -> Assessment:
    """The liveness of a drone whose last heartbeat arrived at `last_heartbeat_at`
    carrying `report` (its metrics), as seen at `now`."""
    if last_heartbeat_at is None:
        return Assessment(Liveness.unknown, ["never_seen"])
    late_before, offline_before = thresholds(now, interval_seconds)
    if last_heartbeat_at < offline_before:
        return Assessment(Liveness.offline, ["no_heartbeat"])
    reasons = ["heartbeat_late"] if last_heartbeat_at < late_before else []
    reasons += report_reasons(report)
    return Assessment(Liveness.degraded if reasons else Liveness.online, reasons)


def liveness_expression(now: datetime, interval_seconds: float) -> ColumnElement[str]:
    """`assess` as SQL over the drones table, for filtering lists by liveness.

    Same boundaries as `assess` (a test compares the two).
    """
    late_before, offline_before = thresholds(now, interval_seconds)
    report = Drone.last_heartbeat
    return case(
        (Drone.last_heartbeat_at.is_(None), Liveness.unknown.value),
        (Drone.last_heartbeat_at < offline_before, Liveness.offline.value),
        (
            or_(
                Drone.last_heartbeat_at < late_before,
                report["status"].astext.in_(UNWELL_REPORTS),
                cast(report["temperature_c"].astext, Float) >= HIGH_TEMPERATURE_C,
                cast(report["battery_percent"].astext, Float) <= LOW_BATTERY_PERCENT,
            ),
            Liveness.degraded.value,
        ),
        else_=Liveness.online.value,
    )


@dataclass(frozen=True)
class Transition:
    customer_id: str
    drone_id: str
    serial: str
    previous: str
    state: str


# One statement for every tenant: pick the drones whose silence changed their
# state (skipping rows a heartbeat holds right now; that heartbeat records its
# own transition), update them, and write one event each. The FOR UPDATE
# re-check makes concurrent sweeps in several API processes record each
# transition once. No index on last_heartbeat_at, on purpose: it would make
# every heartbeat's UPDATE of the drone row non-HOT (all drone indexes
# rewritten per heartbeat), while this scan of the drones table runs every
# interval/2 seconds and costs milliseconds at 10^5 drones.
_SWEEP = text("""
WITH due AS MATERIALIZED (
    SELECT id, liveness AS previous,
           CASE WHEN last_heartbeat_at < :offline_before THEN 'offline' ELSE 'degraded' END
               AS state
    FROM drones
    WHERE customer_id IS NOT NULL
      AND last_heartbeat_at < :late_before
      AND (liveness = 'online'
           OR (liveness = 'degraded' AND last_heartbeat_at < :offline_before))
    FOR UPDATE SKIP LOCKED
), changed AS (
    UPDATE drones d
    SET liveness = due.state, liveness_changed_at = :now
    FROM due
    WHERE d.id = due.id
    RETURNING d.id, d.customer_id, d.serial, d.last_heartbeat_at, due.previous, due.state
), events AS (
    INSERT INTO device_events (customer_id, drone_id, kind, severity, message, details,
                               created_at)
    SELECT customer_id, id, 'liveness', 'warning',
           'liveness ' || previous || ' -> ' || state,
           jsonb_build_object('from', previous, 'to', state,
                              'reasons', jsonb_build_array(
                                  CASE state WHEN 'offline' THEN 'no_heartbeat'
                                             ELSE 'heartbeat_late' END),
                              'last_heartbeat_at', last_heartbeat_at),
           :now
    FROM changed
)
SELECT customer_id, id, serial, previous, state FROM changed
""")


async def liveness_sweep(resources: Resources, now: datetime | None = None) -> list[Transition]:
    """Mark drones degraded or offline whose heartbeats stopped, across all tenants,
    and record each transition as a device event. The background loop's job."""
    now = now or datetime.now(UTC)
    late_before, offline_before = thresholds(now, resources.settings.heartbeat_interval_seconds)
    async with resources.engine.begin() as conn:
        rows = (
            await conn.execute(
                _SWEEP, {"now": now, "late_before": late_before, "offline_before": offline_before}
            )
        ).all()
    transitions = [
        Transition(str(r.customer_id), str(r.id), r.serial, r.previous, r.state) for r in rows
    ]
    for transition in transitions:
        LIVENESS_TRANSITIONS.labels(state=transition.state).inc()
    if transitions:
        log.info(
            "fleet.liveness_swept",
            transitions=len(transitions),
            offline=sum(t.state == Liveness.offline for t in transitions),
        )
    return transitions
