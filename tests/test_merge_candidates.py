"""`GET /venues/{id}/duplicates`: candidates by name and by Neo4j's `point.distance`,
inside the caller's tenant only (api/venues/merge.py, graph/reads.py VENUE_NEIGHBOURS)."""

from __future__ import annotations

import math
import uuid
from typing import Any

from tests.conftest import Tenant

V1 = "/api/v1"
HERE = {"latitude": -36.8435, "longitude": 174.7669}
METRES_PER_DEGREE = 6_371_000 * math.pi / 180  # of latitude


def north(metres: float) -> dict[str, float]:
    return {"latitude": HERE["latitude"] + metres / METRES_PER_DEGREE, "longitude": 174.7669}


def haversine(a: dict[str, float], b: dict[str, float]) -> float:
    lat1, lon1, lat2, lon2 = map(
        math.radians, (a["latitude"], a["longitude"], b["latitude"], b["longitude"])
    )
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_000 * math.asin(math.sqrt(h))


async def venue(client: Any, tenant: Tenant, name: str, location: Any = None) -> str:
    body: dict[str, Any] = {"name": name}
    if location is not None:
        body["location"] = location
    answer = await client.post(f"{V1}/venues", headers=tenant.headers, json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["applied"] is True
    return str(answer.json()["id"])


async def candidates(client: Any, tenant: Tenant, venue_id: str) -> list[dict[str, Any]]:
    answer = await client.get(f"{V1}/venues/{venue_id}/duplicates", headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["candidates"]


async def test_candidates_by_name_or_within_250_m_of_this_tenant_only(
    client, tenant: Tenant, other_tenant: Tenant
):
    mall = await venue(client, tenant, "Harbour Mall", HERE)
    assert await candidates(client, tenant, mall) == []  # the only venue
    same_name_far = await venue(client, tenant, "Harbor Mall", north(50_000))
    close = await venue(client, tenant, "Car park", north(200))
    await venue(client, tenant, "Car park", north(300))  # neither similar nor near
    no_place = await venue(client, tenant, "Harbour Mall East")
    await venue(client, other_tenant, "Harbour Mall", HERE)  # another tenant's twin

    found = {c["id"]: c for c in await candidates(client, tenant, mall)}
    assert set(found) == {same_name_far, close, no_place}
    for venue_id, where in ((same_name_far, north(50_000)), (close, north(200))):
        expected = haversine(HERE, where)
        assert abs(found[venue_id]["distance_m"] - expected) <= 0.002 * expected
    assert found[no_place]["distance_m"] is None
    assert found[close]["name_similarity"] < 0.6  # a candidate for its distance alone
    assert found[same_name_far]["score"] == round(0.7 * found[same_name_far]["name_similarity"], 3)


async def test_candidates_of_an_unknown_or_foreign_venue_are_404(
    client, tenant: Tenant, other_tenant: Tenant
):
    theirs = await venue(client, other_tenant, "Harbour Mall", HERE)
    for venue_id in (theirs, str(uuid.uuid4())):
        answer = await client.get(f"{V1}/venues/{venue_id}/duplicates", headers=tenant.headers)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
