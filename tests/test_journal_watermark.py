"""Migration 0019 replaces per-row `applied` marks with a per-tenant watermark
(`journal_applied.through`): a journal written before it must read the same
after it (every row's state, every tenant's pending rows), and the downgrade
must give the rows their marks back."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from api.core.migrate import alembic_config
from tests.conftest import _asyncpg_dsn
from tests.journal_state import pending_rows, row_states
from tests.test_migrate_output import fresh_database_url  # noqa: F401 (fixture)

BEFORE = "0018_entity_venue_given"

# Per tenant: the states of its journal rows, versions 1, 2, ... (the last
# tenant has none), as a journal marked row by row held them.
JOURNALS = (
    ("applied", "applied", "failed", "applied", "pending", "pending"),
    ("applied", "applied", "applied"),
    ("applied", "pending", "applied"),  # a row retried after a failure: pending below applied
    ("failed",),
    (),
)


async def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    step = command.downgrade if down else command.upgrade
    await asyncio.to_thread(step, alembic_config(url), revision)


async def test_a_journal_marked_row_by_row_reads_the_same_with_the_watermark(
    fresh_database_url: str,  # noqa: F811 (fixture)
) -> None:
    await _migrate(fresh_database_url, BEFORE)
    pg = await asyncpg.connect(_asyncpg_dsn(fresh_database_url))
    try:
        tenants = [uuid.uuid4() for _ in JOURNALS]
        for tenant, states in zip(tenants, JOURNALS, strict=True):
            await pg.execute("INSERT INTO customers (id, name) VALUES ($1, 'w')", tenant)
            await pg.execute(
                "INSERT INTO customer_versions (customer_id, version) VALUES ($1, $2)",
                tenant,
                len(states),
            )
            await pg.executemany(
                "INSERT INTO sync_journal (customer_id, version, entity_type, entity_id, op, "
                "payload, state) VALUES ($1, $2, 'venue', $3, 'upsert', '{}', $4)",
                [(tenant, v, uuid.uuid4(), s) for v, s in enumerate(states, start=1)],
            )
        await _migrate(fresh_database_url, "heads")
        for tenant, states in zip(tenants, JOURNALS, strict=True):
            expected = dict(enumerate(states, start=1))
            assert {v: s for v, (s, _) in (await row_states(pg, tenant)).items()} == expected
            assert await pending_rows(pg, tenant) == states.count("pending")
        through = dict(await pg.fetch("SELECT customer_id, through FROM journal_applied"))
        assert [through[t] for t in tenants] == [4, 3, 1, 1, 0]

        await _migrate(fresh_database_url, BEFORE, down=True)
        for tenant, states in zip(tenants, JOURNALS, strict=True):
            stored = await pg.fetch(
                "SELECT state FROM sync_journal WHERE customer_id = $1 ORDER BY version", tenant
            )
            assert tuple(r["state"] for r in stored) == states
    finally:
        await pg.close()
