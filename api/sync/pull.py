"""`GET /sync/pull`, `GET /sync/bootstrap`, `GET /sync/status`.

Sync reads only Postgres and never waits for Neo4j (DESIGN.md §4). Every
answer is bounded by the tenant's committed head (`HEAD_SQL`): versions are
allocated under the tenant's counter row lock in the transaction that writes
their rows, so a snapshot that sees the counter at V sees every change up to V.
The `frontier` of pull and status is that head (the name stays for
compatibility: it used to be the last version Neo4j had applied); how far
Neo4j lags is reported apart, in status's `projection`.

Pull reads `sync_entities` (the latest state of every entity, tombstones
included): each entity appears once, in its latest state. Only versions in
`(since, head]` are handed out, read with the head and the retention horizon
in one statement (one snapshot), so neither a writer committing nor `overwatch
prune` removing tombstones in between can make a client skip a change. An
entity changed again after the head is left out now and handed out, in its
newer state, by a later pull.

Bootstrap streams the live entities at `snapshot_version` (the head when it
started) as NDJSON, parents first, straight from a server-side cursor, so
memory stays flat whatever the tenant's size. Resuming: every page's `end`
line carries `next` (a `type:id` position); call again with the same
`snapshot_version` and `after=<next>`. Entities that changed after the
snapshot are skipped by later pages and reach the client through the pull
from `snapshot_version` that follows, so the two always converge.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text

from api.auth.principal import Principal
from api.core.errors import Invalid, OverwatchError
from api.core.resources import Resources
from api.journal.envelopes import ENVELOPE_SQL, TYPE_RANK
from api.journal.status import HEAD_SQL
from api.sync.schemas import SYNC_TYPES
from api.sync.workstations import LAST_MUTATION_SQL

BOOTSTRAP_FETCH = 5000

# The head, the retention horizon, the workstation's last mutation and the
# whole page, in one statement: one snapshot (see the module docstring). The
# page comes as one row: Postgres joins the envelopes into the JSON array's
# body and hands it over as bytes (bytea), so Python builds no per-row object
# and never decodes or re-encodes the text; `has_more` probes for one more
# matching version past the page.
_PULL = text(
    "WITH head AS ("  # noqa: S608 (constant SQL)
    f" SELECT {HEAD_SQL} AS upto,"
    " (SELECT pruned_through FROM customer_versions WHERE customer_id = :customer_id)"
    " AS pruned_through,"
    f" ({LAST_MUTATION_SQL}) AS last_mutation"
    "), page AS ("
    f" SELECT e.version, {ENVELOPE_SQL} AS envelope FROM sync_entities e"
    " WHERE e.customer_id = :customer_id AND e.version > :since"
    " AND e.version <= (SELECT upto FROM head)"
    " AND e.entity_type = ANY(:types) ORDER BY e.version LIMIT :limit"
    "), joined AS ("
    " SELECT count(*) AS n, max(version) AS last,"
    " convert_to(COALESCE(string_agg(envelope, ',' ORDER BY version), ''), 'UTF8') AS changes"
    " FROM page"
    ") SELECT head.upto, head.pruned_through, head.last_mutation, n, last, changes,"
    " n = :limit AND EXISTS ("
    " SELECT 1 FROM sync_entities x WHERE x.customer_id = :customer_id AND x.version > joined.last"
    " AND x.version <= head.upto AND x.entity_type = ANY(:types)) AS has_more"
    " FROM head CROSS JOIN joined"
)
# Bootstrap's starting point: the head and the horizon in one snapshot.
_SNAPSHOT = text(
    f"SELECT {HEAD_SQL} AS head, (SELECT pruned_through FROM customer_versions"  # noqa: S608
    " WHERE customer_id = :customer_id) AS pruned_through"
)
_NOTE_PULL = text(
    "UPDATE workstations SET last_pull_at = now(), last_pull_cursor = :cursor "
    "WHERE id = :w AND customer_id = :c"
)
# One type at a time along the primary key (customer_id, entity_type, entity_id):
# every chunk is an index range scan, never a sort of the tenant's rows.
_BOOTSTRAP = text(
    f"SELECT e.entity_id, {ENVELOPE_SQL} AS envelope FROM sync_entities e "  # noqa: S608
    "WHERE e.customer_id = :c AND e.entity_type = :t AND e.entity_id > :after "
    "AND NOT e.deleted AND e.version <= :snapshot ORDER BY e.entity_id LIMIT :limit"
)
BOOTSTRAP_ORDER = sorted(TYPE_RANK, key=TYPE_RANK.__getitem__)
_COUNTS = text(
    "SELECT entity_type, count(*) AS n FROM sync_entities "
    "WHERE customer_id = :c AND NOT deleted AND version <= :snapshot GROUP BY entity_type"
)


class CursorExpired(OverwatchError):
    status_code = 410
    code = "cursor_expired"


def parse_types(raw: str | None) -> list[str]:
    if not raw:
        return list(SYNC_TYPES)
    types = [t.strip() for t in raw.split(",") if t.strip()]
    unknown = [t for t in types if t not in SYNC_TYPES]
    if unknown or not types:
        raise Invalid(
            f"unknown types: {unknown}",
            code="unknown_type",
            details=[{"loc": ["query", "types"], "msg": f"allowed: {list(SYNC_TYPES)}"}],
        )
    return types


async def pull(
    resources: Resources, principal: Principal, *, since: int, limit: int, types: list[str]
) -> bytes:
    """The pull page as JSON bytes (shape: `PullResponse`); envelopes are spliced
    from their stored JSON text rather than decoded and encoded again."""
    customer_id = principal.customer_id
    async with resources.sessions() as session:
        page = (
            await session.execute(
                _PULL,
                {
                    "customer_id": customer_id,
                    "w": principal.workstation_id,
                    "since": since,
                    "types": types,
                    "limit": limit,
                },
            )
        ).one()
        if page.pruned_through is not None and 0 < since < page.pruned_through:
            raise CursorExpired(
                "the cursor is older than the tombstone retention window; bootstrap again",
                details={"since": since, "pruned_through": page.pruned_through},
            )
        upto = int(page.upto)
        if since > upto:
            raise Invalid(
                "since is ahead of every version this tenant has",
                code="bad_cursor",
                details=[{"loc": ["query", "since"], "msg": "ahead of the server"}],
            )
        has_more = bool(page.has_more)
        cursor = int(page.last) if has_more else upto
        if principal.workstation_id is not None:
            await session.execute(
                _NOTE_PULL, {"cursor": cursor, "w": principal.workstation_id, "c": customer_id}
            )
            await session.commit()
    tail = json.dumps(
        {
            "cursor": cursor,
            "has_more": has_more,
            "frontier": upto,
            "last_mutation_id": int(page.last_mutation or 0),
        },
        separators=(",", ":"),
    )
    # One join, one copy of the page (chained `+` copied its megabytes three times).
    return b"".join((b'{"changes":[', page.changes, b"],", tail[1:].encode()))


def parse_after(raw: str | None) -> tuple[int, uuid.UUID]:
    if not raw:
        return -1, uuid.UUID(int=0)
    try:
        entity_type, entity_id = raw.split(":", 1)
        return TYPE_RANK[entity_type], uuid.UUID(entity_id)
    except (ValueError, KeyError) as exc:
        raise Invalid(
            "after must be `type:id` from a previous page's `next`",
            code="bad_position",
            details=[{"loc": ["query", "after"], "msg": "malformed"}],
        ) from exc


async def bootstrap_snapshot(
    resources: Resources, principal: Principal, snapshot_version: int | None
) -> tuple[int, dict[str, int]]:
    """The snapshot version (the committed head now, unless resuming) and its counts."""
    async with resources.sessions() as session:
        head = (await session.execute(_SNAPSHOT, {"customer_id": principal.customer_id})).one()
        current = int(head.head)
        if snapshot_version is not None:
            if snapshot_version > current:
                raise Invalid(
                    "snapshot_version is ahead of the tenant's head",
                    code="bad_snapshot",
                    details=[{"loc": ["query", "snapshot_version"], "msg": f"at most {current}"}],
                )
            if head.pruned_through is not None and snapshot_version < head.pruned_through:
                raise CursorExpired(
                    "the snapshot is older than the retention window; start a new bootstrap"
                )
        snapshot = current if snapshot_version is None else snapshot_version
        counts = {
            r.entity_type: int(r.n)
            for r in (
                await session.execute(_COUNTS, {"c": principal.customer_id, "snapshot": snapshot})
            ).all()
        }
    return snapshot, counts


async def bootstrap_lines(
    resources: Resources,
    principal: Principal,
    snapshot: int,
    counts: dict[str, int],
    after: tuple[int, uuid.UUID],
    page_size: int | None,
) -> AsyncIterator[bytes]:
    """NDJSON lines: header, one envelope per line, then the `end` line.

    Rows are fetched in chunks of BOOTSTRAP_FETCH by keyset position, each chunk
    in a short transaction, so neither memory nor a long-held snapshot grows
    with the tenant's size.
    """
    customer_id = principal.customer_id
    yield _line(
        {
            "snapshot_version": snapshot,
            "counts": counts,
            "page_size": page_size,
            "resumed_after": None if after[0] < 0 else True,
        }
    )
    digest = hashlib.sha256()
    sent = 0
    rank, after_id = after
    position: tuple[str, uuid.UUID] | None = None
    full = False
    for entity_type in BOOTSTRAP_ORDER[max(rank, 0) :]:
        cursor_id = after_id if TYPE_RANK[entity_type] == rank else uuid.UUID(int=0)
        while True:
            want = BOOTSTRAP_FETCH if page_size is None else min(BOOTSTRAP_FETCH, page_size - sent)
            if want <= 0:
                full = True
                break
            async with resources.sessions() as session:
                rows = (
                    await session.execute(
                        _BOOTSTRAP,
                        {
                            "c": customer_id,
                            "t": entity_type,
                            "after": cursor_id,
                            "snapshot": snapshot,
                            "limit": want,
                        },
                    )
                ).all()
            chunk = "".join(r.envelope + "\n" for r in rows).encode()
            digest.update(chunk)
            yield chunk
            sent += len(rows)
            if rows:
                cursor_id = rows[-1].entity_id
                position = (entity_type, cursor_id)
            if len(rows) < want:
                break
        if full:
            break
    end: dict[str, Any] = {"end": True, "count": sent, "checksum": "sha256:" + digest.hexdigest()}
    if full and position is not None:
        end |= {"end": False, "next": f"{position[0]}:{position[1]}"}
    yield _line(end)


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
