"""sync_entities.venue_id: an insert that names its venue keeps it

The envelope trigger (0013, 0017) derived every row's venue from its JSON
payload: `payload->>'venue_id'` twice (a json column: the text is parsed
each time) and a regular expression. For a batch of 500 world nodes that was
3-4 ms of the journal statement's ~20 ms of Postgres CPU, on a two-core
machine where Postgres, the API and Neo4j share the cores (issue 15).

The journal write (api/journal/record.py) knows each change's venue: it now
inserts it, and the trigger keeps a venue an INSERT names (anything but the
nil UUID, the column's default). Every other case is derived as before: an
insert that names none (any other writer), and every UPDATE, where NEW
carries the old row's venue.

Revision ID: 0018_entity_venue_given
Revises: 0017_envelope_closed
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018_entity_venue_given"
down_revision: str | None = "0017_envelope_closed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NIL = "'00000000-0000-0000-0000-000000000000'::uuid"
UUID_TEXT = "'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'"

GIVEN = f"""
    WHEN TG_OP = 'INSERT' AND NEW.venue_id <> {NIL} THEN NEW.venue_id"""

# 0017's function, with GIVEN as the first case of the venue.
FUNCTION = f"""
CREATE OR REPLACE FUNCTION sync_entity_envelope() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  venue uuid;
BEGIN
  venue := CASE{GIVEN}
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
  NEW.venue_id := venue;
  NEW.envelope := '{{"type":"' || NEW.entity_type || '","id":"' || NEW.entity_id
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
           THEN '}}'
         ELSE ',"blob_ids":[]}}'
       END;
  RETURN NEW;
END $$
"""  # noqa: S608 (constant SQL)


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(FUNCTION.replace(GIVEN, ""))
