"""The journal write names each new row's venue (api/journal/record.py `_venue`)
and the envelope trigger keeps a venue an insert names (migration 0018): the
two rules must agree, or a scoped pull would hand an entity to the wrong
workstations. As a property: any entity type, op and payload `venue_id`
(well-formed or not), journaled through the write path, is stored with the
venue and envelope the trigger derives for the same row inserted without one.
"""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from api.journal.entities import EntityType
from api.journal.record import Change, Origin, record
from tests.conftest import Tenant
from tests.properties import against_the_stores

_uuids = st.uuids().map(str)
venue_values = st.one_of(
    _uuids,
    _uuids.map(str.upper),
    _uuids.map(lambda u: u.replace("-", "")),
    _uuids.map(lambda u: "{" + u + "}"),
    _uuids.map(lambda u: u + "\n"),
    _uuids.map(lambda u: " " + u),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40),
    st.integers(),
    st.none(),
)
changes = st.lists(
    st.tuples(
        st.sampled_from(list(EntityType)),
        st.sampled_from(["upsert", "delete"]),
        st.one_of(st.none(), venue_values.map(lambda v: {"venue_id": v, "name": "n"})),
    ),
    min_size=1,
    max_size=8,
)

_COLUMNS = (
    "customer_id, entity_type, entity_id, version, deleted, payload, merged_into, updated_by, "
    "updated_at"
)


@against_the_stores
@given(drawn=changes)
async def test_a_journaled_row_has_the_venue_and_envelope_the_trigger_derives(
    app, tenant: Tenant, pg, drawn
):
    customer = uuid.UUID(tenant.id)
    batch = [Change(entity_type, uuid.uuid4(), op, data) for entity_type, op, data in drawn]
    # `record` alone: the rows, not their projection (most drawn states are
    # not whole entities Neo4j could take).
    async with app.state.resources.sessions() as session:
        versions = await record(session, customer, batch, Origin(updated_by="test"))
        await session.commit()
    await pg.execute(
        "DELETE FROM sync_journal WHERE customer_id = $1 AND version = ANY($2::bigint[])",
        customer,
        versions,
    )
    for change, version in zip(batch, versions, strict=True):
        check = pg.transaction()
        await check.start()
        try:
            stored = await pg.fetchrow(
                f"DELETE FROM sync_entities WHERE entity_id = $1 "
                f"RETURNING {_COLUMNS}, venue_id, envelope",
                change.entity_id,
            )
            assert stored is not None and stored["version"] == version
            derived = await pg.fetchrow(
                f"INSERT INTO sync_entities ({_COLUMNS}) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING venue_id, envelope",
                *(stored[name] for name in _COLUMNS.split(", ")),
            )
            assert (stored["venue_id"], stored["envelope"]) == (
                derived["venue_id"],
                derived["envelope"],
            ), (change.entity_type, change.op, change.data)
        finally:
            await check.rollback()
