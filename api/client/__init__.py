"""The reference workstation client of the sync protocol (versions 1 and 2).

A package a workstation app imports without the server: `import api.client`
loads the standard library and `httpx`, nothing of FastAPI, SQLAlchemy,
asyncpg or the Neo4j driver (tests/test_client_package.py checks it).

    import httpx
    from api.client import SyncClient

    http = httpx.AsyncClient(base_url=URL, headers={"X-API-Key": workstation_key})
    client = SyncClient(http, workstation_id)
    await client.bootstrap()          # snapshot (resumable NDJSON pages), then pull
    client.upsert("venue", venue_id, {"name": "Harbour Mall"})   # queued locally
    await client.push()               # pending mutations -> per-mutation outcomes
    await client.pull()               # changes since `client.cursor` (a version)

- Edits are queued in `pending` with increasing `mutation_id`s, the
  workstation's idempotency keys; `view()` is the confirmed state with them
  laid over it.
- Retries: 502/503/504 and transport errors are retried with backoff (up to
  `max_attempts`). A push that got no answer keeps its body in `unanswered`
  and the next push sends exactly that body again, so the server answers the
  ids it already holds as `duplicate` and nothing applies twice.
- Conflicts and rejections drop the local mutation (server wins; the next pull
  brings its state). A pulled delete with `merged_into` re-points pending
  mutations at the surviving venue.
- After a reinstall, `resume_mutation_ids()` continues after the last id the
  server holds.
- Scopes (v2): `set_scope(venue_ids)` syncs only those venues plus kits and
  drones; the client adopts the answered (rewound) cursor, so the next pull
  backfills added venues and removes (`out_of_scope` deletes) what left.
  `clear_scope()` returns to the whole tenant. Persist `cursor`,
  `scope_version` and `unanswered_scope` with the rest of the state.

May import: the standard library and httpx; nothing of the server.
"""

from api.client.sync import PendingMutation, SyncClient, new_id

__all__ = ["PendingMutation", "SyncClient", "new_id"]
