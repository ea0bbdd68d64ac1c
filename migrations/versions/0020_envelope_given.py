"""sync_entities.envelope: an insert that names its envelope skips the trigger

Every row the journal writes into sync_entities ran the plpgsql trigger
`sync_entity_envelope`: a function call per row that derives the venue
(given since 0018) and builds the envelope. For a batch of 500 world nodes
the trigger was 2-5 ms of the journal statement's ~20 ms of Postgres CPU, on
a two-core machine where Postgres, the API and Neo4j share the cores
(issue 15).

The envelope is now built by one SQL function, `sync_envelope`, which both
the trigger and the journal's INSERT call (the planner inlines it into the
INSERT: no call per row). The trigger is split in two with the same
function: on UPDATE as before, and on INSERT only when the insert names no
envelope. The journal's INSERT names the envelope and the venue, so a new
entity's row skips the trigger; every other writer (and every UPDATE,
the upsert's included) is derived as before.

Revision ID: 0020_envelope_given
Revises: 0019_journal_applied_watermark
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020_envelope_given"
down_revision: str | None = "0019_journal_applied_watermark"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NIL = "'00000000-0000-0000-0000-000000000000'::uuid"
UUID_TEXT = "'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'"

# The envelope of 0017/0018's trigger, as a function of the row's columns.
ENVELOPE = """
CREATE FUNCTION sync_envelope(
  e_type text, e_id uuid, e_deleted boolean, e_version bigint, e_updated_at timestamptz,
  e_updated_by text, e_merged_into uuid, e_payload json
) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT '{"type":"' || e_type || '","id":"' || e_id
    || '","op":"' || CASE WHEN e_deleted THEN 'delete' ELSE 'upsert' END
    || '","version":' || e_version
    || ',"updated_at":"'
    || to_char(e_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    || '","updated_by":' || COALESCE(to_json(e_updated_by)::text, 'null')
    || CASE
         WHEN e_deleted AND e_merged_into IS NOT NULL
           THEN ',"merged_into":"' || e_merged_into || '"'
         WHEN e_deleted THEN ''
         ELSE ',"data":' || COALESCE(e_payload::text, 'null')
       END
    || CASE
         WHEN e_deleted OR e_type NOT IN ('venue', 'world_node', 'operation')
           THEN '}'
         ELSE ',"blob_ids":[]}'
       END
$$
"""

_VENUE = f"""
CREATE OR REPLACE FUNCTION sync_entity_envelope() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  venue uuid;
BEGIN
  venue := CASE
    WHEN TG_OP = 'INSERT' AND NEW.venue_id <> {NIL} THEN NEW.venue_id
    WHEN NEW.entity_type = 'venue' THEN NEW.entity_id
    WHEN NEW.entity_type IN ('kit', 'drone') THEN {NIL}
    WHEN NEW.payload->>'venue_id' ~ {UUID_TEXT} THEN (NEW.payload->>'venue_id')::uuid
    ELSE {NIL}
  END;
  IF TG_OP = 'UPDATE' AND venue = {NIL} AND NEW.deleted THEN
    venue := COALESCE(OLD.venue_id, venue);
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.venue_id IS NOT NULL AND OLD.venue_id <> venue THEN
    INSERT INTO sync_scope_exits (customer_id, venue_id, version, entity_id, entity_type)
    VALUES (NEW.customer_id, OLD.venue_id, NEW.version, NEW.entity_id, NEW.entity_type)
    ON CONFLICT DO NOTHING;
  END IF;
  NEW.venue_id := venue;"""  # noqa: S608 (constant SQL)

FUNCTION = (
    _VENUE
    + """
  NEW.envelope := sync_envelope(NEW.entity_type, NEW.entity_id, NEW.deleted, NEW.version,
    NEW.updated_at, NEW.updated_by, NEW.merged_into, NEW.payload);
  RETURN NEW;
END $$
"""
)

# 0018's function: the envelope built inline.
FUNCTION_0018 = (
    _VENUE
    + """
  NEW.envelope := '{"type":"' || NEW.entity_type || '","id":"' || NEW.entity_id
    || '","op":"' || CASE WHEN NEW.deleted THEN 'delete' ELSE 'upsert' END
    || '","version":' || NEW.version
    || ',"updated_at":"'
    || to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    || '","updated_by":' || COALESCE(to_json(NEW.updated_by)::text, 'null')
    || CASE
         WHEN NEW.deleted AND NEW.merged_into IS NOT NULL
           THEN ',"merged_into":"' || NEW.merged_into || '"'
         WHEN NEW.deleted THEN ''
         ELSE ',"data":' || COALESCE(NEW.payload::text, 'null')
       END
    || CASE
         WHEN NEW.deleted OR NEW.entity_type NOT IN ('venue', 'world_node', 'operation')
           THEN '}'
         ELSE ',"blob_ids":[]}'
       END;
  RETURN NEW;
END $$
"""
)

_ON_UPDATE = """
BEFORE UPDATE OF entity_type, entity_id, version, deleted, payload, merged_into,
  updated_by, updated_at
ON sync_entities FOR EACH ROW EXECUTE FUNCTION sync_entity_envelope()
"""

TRIGGERS = (
    f"CREATE TRIGGER sync_entity_envelope {_ON_UPDATE}",
    "CREATE TRIGGER sync_entity_envelope_insert BEFORE INSERT ON sync_entities FOR EACH ROW "
    "WHEN (NEW.envelope IS NULL) EXECUTE FUNCTION sync_entity_envelope()",
)

TRIGGER_0010 = """
CREATE TRIGGER sync_entity_envelope
BEFORE INSERT OR UPDATE OF entity_type, entity_id, version, deleted, payload, merged_into,
  updated_by, updated_at
ON sync_entities FOR EACH ROW EXECUTE FUNCTION sync_entity_envelope()
"""


def upgrade() -> None:
    op.execute(ENVELOPE)
    op.execute(FUNCTION)
    op.execute("DROP TRIGGER sync_entity_envelope ON sync_entities")
    for trigger in TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    op.execute("DROP TRIGGER sync_entity_envelope_insert ON sync_entities")
    op.execute("DROP TRIGGER sync_entity_envelope ON sync_entities")
    op.execute(TRIGGER_0010)
    op.execute(FUNCTION_0018)
    op.execute(
        "DROP FUNCTION sync_envelope(text, uuid, boolean, bigint, timestamptz, text, uuid, json)"
    )
