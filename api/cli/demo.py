"""Demo data for a fresh install: one customer, venues with a world model, operations.

Written through the same write path as every API call (journal, then Neo4j),
so the demo tenant syncs, searches and verifies like real data.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from api.auth.principal import Principal, Scope
from api.auth.service import create_customer
from api.core.resources import Resources
from api.journal.changes import ChangeSet
from api.journal.entities import EntityType
from api.journal.writes import write
from relational.database import unit_of_work

VENUES = [
    (
        "Harbour Mall",
        "mall",
        -36.8435,
        174.7669,
        "Three-level shopping centre by the ferry terminal",
    ),
    ("Eden Park Stadium", "stadium", -36.8750, 174.7447, "Rugby and cricket stadium, 50,000 seats"),
    ("Auckland Airport Terminal", "airport", -37.0082, 174.7850, "International terminal"),
    ("City Hospital", "hospital", -36.8605, 174.7701, "Acute hospital with a rooftop helipad"),
    ("Penrose Distribution Centre", "warehouse", -36.9100, 174.8150, "Cold-chain warehouse"),
    ("Britomart Station", "station", -36.8443, 174.7676, "Underground rail terminus"),
]
ZONES = [
    "Atrium",
    "Loading dock",
    "Food court",
    "Concourse",
    "Car park",
    "Gate lounge",
    "Stairwell B",
    "Service corridor",
    "Main entrance",
    "Roof deck",
]
KIND_FOR = {"Stairwell B": "Stairwell", "Main entrance": "Entrance", "Service corridor": "Corridor"}


@dataclass
class DemoResult:
    customer_id: uuid.UUID
    api_key: str
    venues: int
    nodes: int
    edges: int
    operations: int


async def seed_demo(
    resources: Resources,
    *,
    venues: int,
    zones_per_venue: int,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Create a demo tenant; `progress(n)` is called after each venue."""
    rng = random.Random(7)  # noqa: S311 (demo data, not security)
    async with unit_of_work(resources.sessions) as session:
        customer, key = await create_customer(session, resources.settings, "Demo Security Ltd")
    principal = Principal(
        key_uuid=None, scopes=frozenset({Scope.customer}), customer_id=customer.id
    )
    totals = {"nodes": 0, "edges": 0, "operations": 0}
    for index in range(venues):
        name, tag, lat, lon, description = VENUES[index % len(VENUES)]
        suffix = "" if index < len(VENUES) else f" {index // len(VENUES) + 1}"

        async def build(
            changes: ChangeSet,
            index: int = index,
            name: str = name,
            tag: str = tag,
            lat: float = lat,
            lon: float = lon,
            description: str = description,
            suffix: str = suffix,
        ) -> None:
            venue_id = uuid.uuid4()
            await changes.upsert(
                EntityType.venue,
                venue_id,
                {
                    "name": name + suffix,
                    "tags": [tag],
                    "description": description,
                    "location": {"latitude": lat + index * 0.001, "longitude": lon},
                },
            )
            nodes: list[uuid.UUID] = []
            for z in range(zones_per_venue):
                zone = ZONES[z % len(ZONES)]
                node_id = uuid.uuid4()
                await changes.upsert(
                    EntityType.world_node,
                    node_id,
                    _node(venue_id, KIND_FOR.get(zone, "Zone"), zone, z),
                )
                nodes.append(node_id)
                perch = uuid.uuid4()
                await changes.upsert(
                    EntityType.world_node,
                    perch,
                    _node(venue_id, "PerchPoint", f"Perch above {zone.lower()}", z),
                )
                await changes.upsert(
                    EntityType.world_edge,
                    uuid.uuid4(),
                    {
                        "venue_id": str(venue_id),
                        "type": "OVERLOOKS",
                        "from_id": str(perch),
                        "to_id": str(node_id),
                        "confidence": round(rng.uniform(0.7, 1.0), 2),
                    },
                )
                totals["nodes"] += 2
                totals["edges"] += 1
            for a, b in pairwise(nodes):
                await changes.upsert(
                    EntityType.world_edge,
                    uuid.uuid4(),
                    {
                        "venue_id": str(venue_id),
                        "type": "CONNECTS_TO",
                        "from_id": str(a),
                        "to_id": str(b),
                    },
                )
                totals["edges"] += 1
            await changes.upsert(
                EntityType.operation,
                uuid.uuid4(),
                {
                    "venue_id": str(venue_id),
                    "status": rng.choice(["completed", "planned"]),
                    "name": f"Night patrol {index + 1}",
                    "kind": "patrol",
                },
            )
            totals["operations"] += 1

        await write(resources, principal, build)
        if progress:
            progress(1)
    return DemoResult(customer.id, key.plaintext, venues, **totals)


def _node(venue_id: uuid.UUID, kind: str, name: str, z: int) -> dict[str, Any]:
    return {
        "venue_id": str(venue_id),
        "kind": kind,
        "name": name,
        "description": f"{name} ({kind.lower()})",
        "position": {"x": float(z * 12), "y": float(z % 3) * 8.0, "z": 0.0},
    }
