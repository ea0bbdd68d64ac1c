"""sync_entities.envelope: the whole envelope, closing brace and empty blob_ids included

0010 stored each entity's envelope without its closing brace, and readers
appended `,"blob_ids":[]}` or `}` to every row they read. That one
concatenation per row was a third of a pull page's time in Postgres (5,000
rows: 4.2 ms of executor time with it, 2.8 ms without). The trigger now
stores the envelope as pull, bootstrap and conflict answers send it for every
entity without blobs: live venues, world nodes and operations end with
`,"blob_ids":[]}`, everything else with `}`. Readers rebuild only the rows
flagged `has_blobs` (their blob ids change without a new version), cutting
that fixed 15-character ending off first (api/journal/envelopes.py).

Existing rows are completed in place; the trigger does not fire, since
`envelope` is not among its columns.

Revision ID: 0017_envelope_closed
Revises: 0016_journal_write_cost
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017_envelope_closed"
down_revision: str | None = "0016_journal_write_cost"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NIL = "'00000000-0000-0000-0000-000000000000'::uuid"
UUID_TEXT = "'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'"

# What every stored envelope now ends with; the downgrade cuts it off again.
ENDING = """
    || CASE
         WHEN NEW.deleted OR NEW.entity_type NOT IN ('venue', 'world_node', 'operation')
           THEN '}'
         ELSE ',"blob_ids":[]}'
       END"""
ENDING_OF_ROWS = """CASE
  WHEN deleted OR entity_type NOT IN ('venue', 'world_node', 'operation') THEN '}'
  ELSE ',"blob_ids":[]}'
END"""

# 0013's function, with ENDING appended to the envelope.
FUNCTION = f"""
CREATE OR REPLACE FUNCTION sync_entity_envelope() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  venue uuid;
BEGIN
  venue := CASE
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
       END{ENDING};
  RETURN NEW;
END $$
"""  # noqa: S608 (constant SQL)


def upgrade() -> None:
    op.execute(FUNCTION)
    op.execute(f"UPDATE sync_entities SET envelope = envelope || {ENDING_OF_ROWS}")  # noqa: S608


def downgrade() -> None:
    op.execute(FUNCTION.replace(ENDING, ""))
    op.execute(
        "UPDATE sync_entities SET envelope = left(envelope, -length("  # noqa: S608
        f"{ENDING_OF_ROWS}))"
    )
