"""Pull paging as a property: any history of writes, any page size, any type
filter, from any cursor; the pages hand out each changed entity once, in its
latest state, in version order, and stop at the head.

The page is read one row past the limit to learn `has_more`, and its rows are
put in version order in Python (api/sync/pull.py): this guards both. Writes go
straight into `sync_entities` (the envelope trigger keeps each row's text), so
an example costs a few statements, not a push.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Tenant
from tests.properties import against_the_stores

SYNC = "/api/v1/sync"
TYPES = ("venue", "kit", "world_node", "operation")
SLOTS = 6  # entities an example writes to, each of one type


@dataclass
class Latest:
    entity_type: str
    version: int
    deleted: bool


writes = st.lists(st.tuples(st.integers(0, SLOTS - 1), st.booleans()), min_size=0, max_size=25)


@against_the_stores
@given(
    history=writes,
    limit=st.integers(1, 7),
    types=st.one_of(st.none(), st.sets(st.sampled_from(TYPES), min_size=1)),
    rewind=st.integers(0, 30),
)
async def test_pages_hand_out_each_change_once_in_order_up_to_the_head(
    client, tenant: Tenant, pg, history, limit, types, rewind
):
    ids = [uuid.uuid4() for _ in range(SLOTS)]
    kinds = [TYPES[slot % len(TYPES)] for slot in range(SLOTS)]
    latest: dict[uuid.UUID, Latest] = {}
    for slot, delete in history:
        version = await pg.fetchval(
            "UPDATE customer_versions SET version = version + 1 WHERE customer_id = $1::uuid "
            "RETURNING version",
            tenant.id,
        )
        await pg.execute(
            "INSERT INTO sync_entities (customer_id, entity_type, entity_id, version, deleted, "
            "payload) VALUES ($1::uuid, $2, $3, $4, $5, $6::json) "
            "ON CONFLICT (customer_id, entity_type, entity_id) DO UPDATE SET "
            "version = excluded.version, deleted = excluded.deleted, payload = excluded.payload",
            tenant.id,
            kinds[slot],
            ids[slot],
            version,
            delete,
            None if delete else json.dumps({"name": f"v{version}"}),
        )
        latest[ids[slot]] = Latest(kinds[slot], version, delete)
    head = await pg.fetchval(
        "SELECT version FROM customer_versions WHERE customer_id = $1::uuid", tenant.id
    )
    # From some point of the tenant's history (earlier examples' entities included).
    since = max(0, head - rewind)
    query = f"&types={','.join(sorted(types))}" if types else ""
    pages, cursor = [], since
    while True:
        r = await client.get(
            f"{SYNC}/pull?since={cursor}&limit={limit}{query}", headers=tenant.headers
        )
        assert r.status_code == 200, r.text
        page = r.json()
        changes = page["changes"]
        assert len(changes) <= limit
        assert page["frontier"] == head
        if page["has_more"]:
            assert len(changes) == limit
            assert page["cursor"] == changes[-1]["version"] > cursor
        else:
            assert page["cursor"] == head
        pages.append(changes)
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    # `has_more` promises more: no page after one that said so is empty.
    assert all(pages[1:]), [len(page) for page in pages]
    handed = [change for page in pages for change in page]
    versions = [change["version"] for change in handed]
    assert versions == sorted(set(versions)), "versions out of order or repeated"
    rows = await pg.fetch(
        "SELECT entity_type, entity_id, version, deleted FROM sync_entities "
        "WHERE customer_id = $1::uuid AND version > $2 ORDER BY version",
        tenant.id,
        since,
    )
    expected = [
        (row["entity_type"], str(row["entity_id"]), row["version"], row["deleted"])
        for row in rows
        if types is None or row["entity_type"] in types
    ]
    got = [(c["type"], c["id"], c["version"], c["op"] == "delete") for c in handed]
    assert got == expected
    # This example's own writes, against the model kept while writing them.
    for entity_id, state in latest.items():
        if state.version > since and (types is None or state.entity_type in types):
            assert (state.entity_type, str(entity_id), state.version, state.deleted) in got
