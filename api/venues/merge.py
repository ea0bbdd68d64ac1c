"""Merging venues that several workstations created for one real place.

Duplicates are proposed by name similarity and distance. A merge moves the
world nodes, edges and operations of each merged venue onto the survivor,
re-points their blobs, fills the survivor's empty fields from the merged
venues (tags and property keys are united; the survivor wins on a clash) and
deletes each merged venue with `merged_into = survivor`, so every
workstation's next pull carries a delete envelope to remap references with.
It is one journaled write: all of it or nothing.
"""

from __future__ import annotations

import re
import uuid
from difflib import SequenceMatcher
from typing import Any

from sqlalchemy import text

from api.auth.deps import tenant_of
from api.auth.principal import Principal
from api.core.errors import Invalid, NotFound
from api.core.resources import Resources
from api.journal.changes import ChangeRejected, ChangeSet
from api.journal.entities import EntityType
from api.journal.envelopes import note_blobs
from api.journal.writes import write
from graph import reads

NAME_THRESHOLD = 0.6
NEAR_METRES = 250.0

_BY_VENUE = text(
    "SELECT entity_type, entity_id, payload FROM sync_entities WHERE customer_id = :c "
    "AND entity_type = ANY(:types) AND NOT deleted AND venue_id = CAST(:v AS uuid) "
    "ORDER BY entity_type DESC, version"  # world_node, then world_edge, then operation
)
_REPOINT_BLOBS = text(
    "UPDATE blobs SET owner_id = :survivor WHERE customer_id = :c AND owner_type = 'venue' "
    "AND owner_id = ANY(:merged)"
)


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


async def duplicates(
    resources: Resources, principal: Principal, venue_id: uuid.UUID, limit: int
) -> list[dict[str, Any]]:
    """Venues of the tenant that look like the same place as `venue_id`, best first.

    Read from the graph, like every venue read: names and Neo4j's `point.distance`
    between the venues' locations come back in one query.
    """
    neighbours = await reads.venue_neighbours(
        resources.graph, str(tenant_of(principal)), str(venue_id)
    )
    if neighbours is None:
        raise NotFound("venue not found")
    name, others = neighbours
    found = []
    for other in others:
        similarity = SequenceMatcher(None, _normal(name), _normal(other["name"])).ratio()
        metres = other["distance_m"]
        near = metres is not None and metres <= NEAR_METRES
        if similarity < NAME_THRESHOLD and not near:
            continue
        closeness = 0.0 if metres is None else max(0.0, 1 - metres / (4 * NEAR_METRES))
        found.append(
            {
                "id": other["id"],
                "name": other["name"],
                "score": round(0.7 * similarity + 0.3 * closeness, 3),
                "name_similarity": round(similarity, 3),
                "distance_m": None if metres is None else round(metres, 1),
            }
        )
    found.sort(key=lambda c: (-c["score"], c["id"]))
    return found[:limit]


def merged_venue_data(survivor: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    data = dict(survivor)
    tags = set(data.get("tags") or [])
    properties = dict(data.get("properties") or {})
    for other in others:
        for key in ("address", "description", "location"):
            if data.get(key) is None and other.get(key) is not None:
                data[key] = other[key]
        tags |= set(other.get("tags") or [])
        for key, value in (other.get("properties") or {}).items():
            properties.setdefault(key, value)
    data["tags"] = sorted(tags)[:50]
    data["properties"] = properties
    return data


async def merge(
    resources: Resources, principal: Principal, survivor_id: uuid.UUID, merge_ids: list[uuid.UUID]
) -> dict[str, Any]:
    if survivor_id in merge_ids:
        raise Invalid(
            "a venue cannot be merged into itself",
            code="merge_into_self",
            details=[{"loc": ["body", "merge_ids"], "msg": "contains the survivor"}],
        )

    async def build(changes: ChangeSet) -> dict[str, Any]:
        changes.allow_venue_moves = True
        survivor = await changes.mine(survivor_id, EntityType.venue)
        if survivor is None or survivor.deleted:
            raise ChangeRejected("not_found", "venue not found", status_code=404)
        merged_states = []
        for merged_id in merge_ids:
            state = await changes.mine(merged_id, EntityType.venue)
            if state is None or state.deleted:
                raise ChangeRejected(
                    "not_found",
                    f"venue {merged_id} not found",
                    [{"loc": ["body", "merge_ids"], "msg": str(merged_id)}],
                    404,
                )
            merged_states.append(state.data or {})
        moved: dict[str, int] = {"world_node": 0, "world_edge": 0, "operation": 0}
        for merged_id in merge_ids:
            rows = (
                await changes.session.execute(
                    _BY_VENUE,
                    {
                        "c": changes.customer_id,
                        "v": str(merged_id),
                        "types": ["world_node", "world_edge", "operation"],
                    },
                )
            ).all()
            # Nodes first (the query's order), so moved edges find their endpoints.
            for row in rows:
                await changes.upsert(
                    EntityType(row.entity_type),
                    row.entity_id,
                    dict(row.payload) | {"venue_id": str(survivor_id)},
                )
                moved[row.entity_type] += 1
            await changes.delete(EntityType.venue, merged_id, merged_into=survivor_id)
        data = merged_venue_data(survivor.data or {}, merged_states)
        await changes.upsert(EntityType.venue, survivor_id, data)
        repointed = await changes.session.execute(
            _REPOINT_BLOBS, {"survivor": survivor_id, "c": changes.customer_id, "merged": merge_ids}
        )
        if repointed.rowcount:  # type: ignore[attr-defined]
            await note_blobs(changes.session, changes.customer_id, [survivor_id])
        return {"moved": moved, "venue": data}

    outcome, recorded = await write(resources, principal, build)
    return {
        "id": str(survivor_id),
        "merged": [str(m) for m in merge_ids],
        "version": recorded.last_version,
        "applied": recorded.applied,
        **outcome,
    }
