"""Triggers that announce every change able to invalidate a cached API key

Each API process caches verified keys (api/auth/cache.py) and clears the
cache on any notification on `overwatch_auth`. These triggers send one on
commit whenever a key row changes (a revocation, an expiry; not the batched
`last_used_at` writes, which would clear every cache every 30 s), a key is
deleted, a customer is disabled or enabled, or a workstation is deactivated.
Direct SQL (an operator's UPDATE) invalidates the caches just like the API.

Revision ID: 0012_auth_notify
Revises: 0011_journal_failed
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_auth_notify"
down_revision: str | None = "0011_journal_failed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The payload names the table only: a receiver clears its whole cache anyway,
# and identical payloads in one transaction are delivered once.
NOTIFY_AUTH = """
CREATE FUNCTION overwatch_notify_auth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('overwatch_auth', json_build_object('table', TG_TABLE_NAME)::text);
    RETURN NULL;
END
$$
"""

TRIGGERS = (
    # Any change but `last_used_at` (written in batches by every process).
    "CREATE TRIGGER api_keys_notify_auth_update AFTER UPDATE ON api_keys FOR EACH ROW "
    "WHEN ((to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at')) "
    "EXECUTE FUNCTION overwatch_notify_auth()",
    "CREATE TRIGGER api_keys_notify_auth_delete AFTER DELETE ON api_keys "
    "FOR EACH STATEMENT EXECUTE FUNCTION overwatch_notify_auth()",
    "CREATE TRIGGER customers_notify_auth AFTER UPDATE OF disabled_at ON customers FOR EACH ROW "
    "WHEN (OLD.disabled_at IS DISTINCT FROM NEW.disabled_at) "
    "EXECUTE FUNCTION overwatch_notify_auth()",
    "CREATE TRIGGER workstations_notify_auth AFTER UPDATE OF deactivated_at ON workstations "
    "FOR EACH ROW WHEN (OLD.deactivated_at IS DISTINCT FROM NEW.deactivated_at) "
    "EXECUTE FUNCTION overwatch_notify_auth()",
)


def upgrade() -> None:
    op.execute(NOTIFY_AUTH)
    for trigger in TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS workstations_notify_auth ON workstations")
    op.execute("DROP TRIGGER IF EXISTS customers_notify_auth ON customers")
    op.execute("DROP TRIGGER IF EXISTS api_keys_notify_auth_delete ON api_keys")
    op.execute("DROP TRIGGER IF EXISTS api_keys_notify_auth_update ON api_keys")
    op.execute("DROP FUNCTION IF EXISTS overwatch_notify_auth()")
