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
import operator
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import text

from api.auth.principal import Principal
from api.core.errors import Invalid, OverwatchError, postgres_unavailable
from api.core.resources import Resources
from api.journal.envelopes import ENVELOPE_SQL, TYPE_RANK
from api.journal.scopes import scoped
from api.journal.status import HEAD_SQL
from api.sync.schemas import SYNC_TYPES
from api.sync.workstations import LAST_MUTATION_SQL
from relational.database import DriverStatement, is_unreachable

BOOTSTRAP_FETCH = 5000

_SCOPED_SQL = (
    "EXISTS (SELECT 1 FROM sync_scope_venues WHERE workstation_id = :w"
    " AND customer_id = :customer_id)"
)
# A scoped workstation's page (api/sync/scope.py): per venue of its scope
# (`sv`, the tenant-wide pseudo-venue included), the entities changed above
# both the cursor and the venue's floor (tombstones only above `added`); the
# exits of those venues of entities whose current state is not visible in the
# scope, and the workstation's pending removals, both handed out as removals
# at their version. Each source is walked in version order along an index and
# cut at limit + 1, so the page costs rows of the scope, never of the tenant.
# An entity is handed out as a removal only if its current state is not in
# the scope (else that state is sent or already held), and at most once a page.
_VISIBLE = (
    "EXISTS (SELECT 1 FROM sync_entities cur JOIN sv s2 ON s2.venue_id = cur.venue_id"
    " WHERE cur.customer_id = :customer_id AND cur.entity_type = {alias}.entity_type"
    " AND cur.entity_id = {alias}.entity_id AND (NOT cur.deleted OR cur.version > s2.added))"
)
_PULL_SCOPED = text(
    "WITH head AS ("  # noqa: S608 (constant SQL)
    f" SELECT {HEAD_SQL} AS upto,"
    " (SELECT pruned_through FROM customer_versions WHERE customer_id = :customer_id)"
    " AS pruned_through,"
    f" ({LAST_MUTATION_SQL}) AS last_mutation"
    "), sv AS ("
    " SELECT venue_id, floor, added FROM sync_scope_venues"
    " WHERE workstation_id = :w AND customer_id = :customer_id"
    "), expired AS ("
    " SELECT COALESCE(bool_or(GREATEST(:since, sv.floor) > 0"
    " AND GREATEST(:since, sv.floor, sv.added) < head.pruned_through), false) AS expired"
    " FROM sv CROSS JOIN head"
    "), cand AS ("
    " SELECT x.version AS pos, x.entity_type, x.entity_id, false AS removal FROM sv"
    " CROSS JOIN LATERAL (SELECT e.version, e.entity_type, e.entity_id FROM sync_entities e"
    " WHERE e.customer_id = :customer_id AND e.venue_id = sv.venue_id"
    " AND e.version > GREATEST(:since, sv.floor) AND e.version <= (SELECT upto FROM head)"
    " AND e.entity_type = ANY(:types) AND (NOT e.deleted OR e.version > sv.added)"
    " ORDER BY e.version LIMIT :limit + 1) x"
    " UNION ALL"
    " SELECT x.version, x.entity_type, x.entity_id, true FROM sv"
    " CROSS JOIN LATERAL (SELECT ex.version, ex.entity_type, ex.entity_id"
    " FROM sync_scope_exits ex WHERE ex.customer_id = :customer_id"
    " AND ex.venue_id = sv.venue_id AND ex.version > GREATEST(:since, sv.floor, sv.added)"
    " AND ex.version <= (SELECT upto FROM head) AND ex.entity_type = ANY(:types)"
    f" AND NOT {_VISIBLE.format(alias='ex')}"
    " ORDER BY ex.version LIMIT :limit + 1) x"
    " UNION ALL"
    " (SELECT r.version, r.entity_type, r.entity_id, true FROM sync_scope_removals r"
    " WHERE r.workstation_id = :w AND r.customer_id = :customer_id AND r.version > :since"
    " AND r.version <= (SELECT upto FROM head) AND r.entity_type = ANY(:types)"
    f" AND NOT {_VISIBLE.format(alias='r')}"
    " ORDER BY r.version LIMIT :limit + 1)"
    "), top AS (SELECT * FROM cand ORDER BY pos LIMIT :limit + 1"
    "), page AS ("
    " SELECT pos, entity_type, entity_id, removal,"
    " row_number() OVER (PARTITION BY entity_id ORDER BY pos DESC) AS nth"
    " FROM (SELECT * FROM top ORDER BY pos LIMIT :limit) first"
    "), body AS ("
    " SELECT p.pos, CASE WHEN p.removal THEN"
    """ '{"type":"' || p.entity_type || '","id":"' || p.entity_id || '","op":"delete",'"""
    """ || '"version":' || p.pos || ',"updated_at"\\:null,"updated_by"\\:null,'"""
    """ || '"out_of_scope"\\:true}'"""
    f" ELSE {ENVELOPE_SQL} END AS envelope"
    " FROM page p LEFT JOIN sync_entities e ON NOT p.removal AND e.customer_id = :customer_id"
    " AND e.entity_type = p.entity_type AND e.entity_id = p.entity_id"
    " WHERE p.nth = 1"
    "), joined AS ("
    " SELECT (SELECT count(*) FROM top) AS candidates, (SELECT max(pos) FROM page) AS last,"
    " convert_to(COALESCE(string_agg(envelope, ',' ORDER BY pos), ''), 'UTF8') AS changes"
    " FROM body"
    ") SELECT head.upto, head.pruned_through, head.last_mutation, expired.expired,"
    " candidates > :limit AS has_more, last, changes"
    " FROM head CROSS JOIN expired CROSS JOIN joined"
)
# The head, the retention horizon, the workstation's last mutation and the
# page, in one statement: one snapshot (see the module docstring). The first
# row carries the head's columns, each later row one change (its version and
# envelope), the other columns NULL: asyncpg decodes nothing for a NULL, where
# repeating the head on every row cost ~0.8 ms a page of 5,000. The page is
# read one row past `limit` to learn `has_more`. Envelopes come as rows of
# text and are joined in Python: Postgres joining them itself (`string_agg`
# into one bytea) cost more than it saved, because one value of megabytes is
# built by repeated copies and leaves the server only once complete, where
# rows stream out as they are read (two pages of 7,001 entities: 24.8 -> 18.0
# ms from a client, join included).
_PULL = text(
    "WITH head AS ("  # noqa: S608 (constant SQL)
    f" SELECT {HEAD_SQL} AS upto,"
    " (SELECT pruned_through FROM customer_versions WHERE customer_id = :customer_id)"
    " AS pruned_through,"
    f" ({LAST_MUTATION_SQL}) AS last_mutation,"
    f" {_SCOPED_SQL} AS scoped"
    ") SELECT upto, pruned_through, last_mutation, scoped,"
    " NULL::bigint AS version, NULL::text AS envelope FROM head"
    " UNION ALL SELECT NULL, NULL, NULL, NULL, p.version, p.envelope"
    " FROM head CROSS JOIN LATERAL ("
    f" SELECT e.version, {ENVELOPE_SQL} AS envelope FROM sync_entities e"
    " WHERE NOT head.scoped AND e.customer_id = :customer_id AND e.version > :since"
    " AND e.version <= head.upto AND e.entity_type = ANY(:types)"
    " ORDER BY e.version LIMIT :limit + 1) p"
)
# Column positions of its rows (read by index: the page's hot loop).
_VERSION, _ENVELOPE = 4, 5
# Bootstrap's starting point: the head and the horizon in one snapshot.
_SNAPSHOT = text(
    f"SELECT {HEAD_SQL} AS head, (SELECT pruned_through FROM customer_versions"  # noqa: S608
    " WHERE customer_id = :customer_id) AS pruned_through"
)
# Sync health's note of the pull (api/sync/health.py), committed without
# waiting for the WAL flush: a note lost in a Postgres crash only makes the
# workstation look one pull older, and the pull no longer waits on the disk.
_NOTE_PULL = text(
    "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true)) "
    "UPDATE workstations SET last_pull_at = now(), last_pull_cursor = :cursor "
    "FROM quick WHERE id = :w AND customer_id = :c"
)
_PULL_DRIVER = DriverStatement(_PULL)
_PULL_SCOPED_DRIVER = DriverStatement(_PULL_SCOPED)
_NOTE_PULL_DRIVER = DriverStatement(_NOTE_PULL)
# One type at a time along the primary key (customer_id, entity_type, entity_id):
# every chunk is an index range scan, never a sort of the tenant's rows.
_BOOTSTRAP = text(
    f"SELECT e.entity_id, {ENVELOPE_SQL} AS envelope FROM sync_entities e "  # noqa: S608
    "WHERE e.customer_id = :c AND e.entity_type = :t AND e.entity_id > :after "
    "AND NOT e.deleted AND e.version <= :snapshot ORDER BY e.entity_id LIMIT :limit"
)
# Every venue of a scope at once, one type at a time, in (venue, id) order:
# per venue an index range along `ix_sync_entities_scope_live` cut at the
# chunk size, merged, cut again; envelopes are built for the chunk only.
_SCOPED_BOOTSTRAP = text(
    "WITH chunk AS (SELECT x.venue_id, x.entity_id"  # noqa: S608 (constant SQL)
    " FROM unnest(CAST(:venues AS uuid[])) AS v(venue)"
    " CROSS JOIN LATERAL (SELECT e.venue_id, e.entity_id FROM sync_entities e"
    " WHERE e.customer_id = :c AND e.venue_id = v.venue AND e.entity_type = :t"
    " AND (e.venue_id > :av OR e.entity_id > :after) AND NOT e.deleted"
    " AND e.version <= :snapshot ORDER BY e.entity_id LIMIT :limit) x"
    " WHERE v.venue >= :av ORDER BY x.venue_id, x.entity_id LIMIT :limit)"
    f" SELECT c.venue_id, c.entity_id, {ENVELOPE_SQL} AS envelope FROM chunk c"
    " JOIN sync_entities e ON e.customer_id = :c AND e.entity_type = :t"
    " AND e.entity_id = c.entity_id ORDER BY c.venue_id, c.entity_id"
)
_SCOPED_COUNTS = text(
    "SELECT entity_type, count(*) AS n FROM sync_entities WHERE customer_id = :c "
    "AND venue_id = ANY(:venues) AND NOT deleted AND version <= :snapshot GROUP BY entity_type"
)
BOOTSTRAP_ORDER = sorted(TYPE_RANK, key=TYPE_RANK.__getitem__)
_COUNTS = text(
    "SELECT entity_type, count(*) AS n FROM sync_entities "
    "WHERE customer_id = :c AND NOT deleted AND version <= :snapshot GROUP BY entity_type"
)


_BY_VERSION = operator.itemgetter(_VERSION)


def _head_index(rows: list[asyncpg.Record]) -> int:
    """Where the head's row is (the only one without a version): first, as
    the statement writes it, unless a plan ever says otherwise."""
    if rows[0][_VERSION] is None:
        return 0
    return next(i for i, row in enumerate(rows) if row[_VERSION] is None)


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
) -> tuple[bytes, bytes, bytes]:
    """The pull page as the three parts of its JSON (shape: `PullResponse`),
    sent one after the other (`SplicedResponse`); the envelopes are spliced
    from their stored JSON text rather than decoded and encoded again."""
    customer_id = principal.customer_id
    params = {
        "customer_id": customer_id,
        "w": principal.workstation_id,
        "since": since,
        "types": types,
        "limit": limit,
    }
    # One statement, so one snapshot, autocommitted on a driver connection
    # (no BEGIN, no SQLAlchemy result rows); the note is a transaction of its own.
    try:
        pool = await resources.direct()
        async with pool.acquire() as driver:
            rows = await _PULL_DRIVER.fetch(driver, params)
            page = rows.pop(_head_index(rows))
            # The lateral scan yields version order already, and sorting an
            # ordered list is one linear pass in C: the order rests on no plan.
            rows.sort(key=_BY_VERSION)
            if page["scoped"]:  # protocol v2: the workstation declared a scope
                page = (await _PULL_SCOPED_DRIVER.fetch(driver, params))[0]
                expired = bool(page["expired"])
                has_more, last, changes = bool(page["has_more"]), page["last"], page["changes"]
            else:
                pruned = page["pruned_through"]
                expired = pruned is not None and 0 < since < pruned
                has_more = len(rows) > limit
                del rows[limit:]
                last = rows[-1][_VERSION] if rows else None
                changes = ",".join([row[_ENVELOPE] for row in rows]).encode()
            if expired:
                raise CursorExpired(
                    "the cursor is older than the tombstone retention window; bootstrap again",
                    details={"since": since, "pruned_through": page["pruned_through"]},
                )
            upto = int(page["upto"])
            if since > upto:
                raise Invalid(
                    "since is ahead of every version this tenant has",
                    code="bad_cursor",
                    details=[{"loc": ["query", "since"], "msg": "ahead of the server"}],
                )
            cursor = int(last) if has_more else upto
            if principal.workstation_id is not None:
                note = {"cursor": cursor, "w": principal.workstation_id, "c": customer_id}
                await _NOTE_PULL_DRIVER.fetch(driver, note)
    except Exception as exc:
        if not (is_unreachable(exc) or isinstance(exc, asyncpg.InterfaceError)):
            raise
        raise postgres_unavailable() from exc
    tail = json.dumps(
        {
            "cursor": cursor,
            "has_more": has_more,
            "frontier": upto,
            "last_mutation_id": int(page["last_mutation"] or 0),
        },
        separators=(",", ":"),
    )
    # Never joined: the page's megabytes go out as Postgres handed them over.
    return b'{"changes":[', changes, b"]," + tail[1:].encode()


Position = tuple[str, uuid.UUID | None, uuid.UUID]  # entity type, venue (scoped), last id


def parse_after(raw: str | None) -> Position | None:
    """A `next` position: `type:id`, or `type:venue:id` in a scoped stream."""
    if not raw:
        return None
    try:
        parts = raw.split(":")
        if parts[0] not in TYPE_RANK or len(parts) not in (2, 3):
            raise ValueError(raw)
        venue = uuid.UUID(parts[1]) if len(parts) == 3 else None
        return parts[0], venue, uuid.UUID(parts[-1])
    except ValueError as exc:
        raise Invalid(
            "after must be the `next` of a previous page (`type:id`, or `type:venue:id`)",
            code="bad_position",
            details=[{"loc": ["query", "after"], "msg": "malformed"}],
        ) from exc


@dataclass(frozen=True)
class Snapshot:
    version: int
    counts: dict[str, int]
    # The scope's venues (tenant-wide pseudo-venue included); None: the whole tenant.
    venues: list[uuid.UUID] | None = None
    scope_version: int | None = None

    @property
    def scope_venues(self) -> list[uuid.UUID] | None:
        """The scope's venues in stream order (sorted), tenant-wide included."""
        return None if self.venues is None else sorted(self.venues)


async def bootstrap_snapshot(
    resources: Resources, principal: Principal, snapshot_version: int | None
) -> Snapshot:
    """The snapshot version (the committed head now, unless resuming), its
    counts and, for a scoped workstation, its scope."""
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
        venues = await scoped(session, principal.workstation_id, principal.customer_id)
        scope_version = None
        if venues is not None:
            scope_version = (
                await session.execute(
                    text(
                        "SELECT scope_version FROM sync_scopes WHERE workstation_id = :w "
                        "AND customer_id = :c"
                    ),
                    {"w": principal.workstation_id, "c": principal.customer_id},
                )
            ).scalar()
        params = {"c": principal.customer_id, "snapshot": snapshot, "venues": venues}
        rows = await session.execute(_COUNTS if venues is None else _SCOPED_COUNTS, params)
        counts = {r.entity_type: int(r.n) for r in rows.all()}
    return Snapshot(snapshot, counts, venues, scope_version)


async def bootstrap_lines(
    resources: Resources,
    principal: Principal,
    snapshot: Snapshot,
    after: Position | None,
    page_size: int | None,
) -> AsyncIterator[bytes]:
    """NDJSON lines: header, one envelope per line, then the `end` line.

    Rows are fetched in chunks of BOOTSTRAP_FETCH by keyset position, each chunk
    in a short transaction, so neither memory nor a long-held snapshot grows
    with the tenant's size. A scoped stream walks each venue of the scope.
    """
    nil = uuid.UUID(int=0)
    first, key = 0, (nil, nil)
    if after is not None:
        entity_type, venue, entity_id = after
        venues = snapshot.scope_venues
        if (venue is None) != (venues is None) or (venues is not None and venue not in venues):
            raise Invalid(
                "after names a position outside this stream (was the scope changed?); "
                "start the bootstrap again",
                code="bad_position",
                details=[{"loc": ["query", "after"], "msg": "not in this stream"}],
            )
        first, key = BOOTSTRAP_ORDER.index(entity_type), (venue or nil, entity_id)
    return _bootstrap_stream(resources, principal, snapshot, first, key, page_size)


async def _bootstrap_stream(
    resources: Resources,
    principal: Principal,
    snapshot: Snapshot,
    first: int,
    after: tuple[uuid.UUID, uuid.UUID],
    page_size: int | None,
) -> AsyncIterator[bytes]:
    nil = uuid.UUID(int=0)
    venues = snapshot.scope_venues
    header: dict[str, Any] = {
        "snapshot_version": snapshot.version,
        "counts": snapshot.counts,
        "page_size": page_size,
        "resumed_after": True if first or after[1].int else None,
    }
    if venues is not None:
        header["scope"] = {
            "venues": [str(v) for v in venues if v.int],
            "scope_version": snapshot.scope_version,
        }
    yield _line(header)
    digest = hashlib.sha256()
    sent = 0
    position: str | None = None
    full = False
    for index in range(first, len(BOOTSTRAP_ORDER)):
        entity_type = BOOTSTRAP_ORDER[index]
        key = after if index == first else (nil, nil)
        while True:
            want = BOOTSTRAP_FETCH if page_size is None else min(BOOTSTRAP_FETCH, page_size - sent)
            if want <= 0:
                full = True
                break
            params = {
                "c": principal.customer_id,
                "t": entity_type,
                "venues": venues,
                "av": key[0],
                "after": key[1],
                "snapshot": snapshot.version,
                "limit": want,
            }
            async with resources.sessions() as session:
                statement = _BOOTSTRAP if venues is None else _SCOPED_BOOTSTRAP
                rows = (await session.execute(statement, params)).all()
            chunk = "".join(r.envelope + "\n" for r in rows).encode()
            digest.update(chunk)
            yield chunk
            sent += len(rows)
            if rows:
                last = rows[-1]
                if venues is None:
                    key = (nil, last.entity_id)
                    position = f"{entity_type}:{last.entity_id}"
                else:
                    key = (last.venue_id, last.entity_id)
                    position = f"{entity_type}:{last.venue_id}:{last.entity_id}"
            if len(rows) < want:
                break
        if full:
            break
    end: dict[str, Any] = {"end": True, "count": sent, "checksum": "sha256:" + digest.hexdigest()}
    if full and position is not None:
        end |= {"end": False, "next": position}
    yield _line(end)


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
