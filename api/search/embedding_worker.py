"""Keeping embeddings in step with the text of venues and world nodes.

The journal queues every venue and world-node upsert in `embedding_queue`
(same transaction, so none is lost). The worker, a loop in every API process:

1. claims queued rows whose journal change already reached Neo4j
   (`FOR UPDATE SKIP LOCKED`: processes share the queue, never a row);
2. reads each node's current text from Neo4j and hashes it with the model id;
   a node whose stored `embedding_hash` matches is skipped, not re-encoded;
3. encodes the rest in batches of `EMBEDDING_BATCH_SIZE` in a worker thread;
4. writes `embedding` + `embedding_hash` (only if the node is still at the
   version read), deletes the claimed rows and commits.

A crash anywhere before the commit leaves the rows queued for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import text

from api.core.resources import Resources
from api.search.embedder import embedder_of, encode
from embeddings import INDEX_DIMENSIONS, Embedder, content_hash, embedding_text
from graph import embedding_store
from graph.driver import GraphClient
from graph.search import Target
from relational.database import unit_of_work

log = structlog.get_logger("api.search.embedding_worker")

TARGETS: tuple[Target, ...] = ("venue", "world_node")
EMBEDDING_INTERVAL_SECONDS = 3.0  # between worker runs; a run drains what it can
CLAIM_BATCHES = 8  # claim this many encoding batches' worth of rows at once
ENCODE_BATCHES = 2  # encoding batches per encode call (a search waits at most one call)
JOB_BUDGET_SECONDS = 30.0  # one job run stops claiming after this; the loop comes back

EMBEDDING_QUEUE_DEPTH = Gauge(
    "overwatch_embedding_queue_depth",
    "Venues and world nodes waiting for the embedding worker (sampled after each run).",
)
EMBEDDINGS_WRITTEN = Counter(
    "overwatch_embeddings_written_total", "Embeddings computed and stored.", ["entity_type"]
)
EMBEDDINGS_UNCHANGED = Counter(
    "overwatch_embeddings_unchanged_total",
    "Queued nodes whose text had not changed since their embedding (not re-encoded).",
    ["entity_type"],
)

# Rows whose change is still pending in the journal wait: Neo4j does not hold
# that text yet. At or below the tenant's watermark it is applied (or failed);
# above it, the journal row says.
_CLAIM = text(
    "SELECT q.id, q.customer_id, q.entity_type, q.entity_id FROM embedding_queue q "
    "LEFT JOIN journal_applied a ON a.customer_id = q.customer_id "
    "WHERE (q.version <= a.through OR NOT EXISTS (SELECT 1 FROM sync_journal j "
    "WHERE j.customer_id = q.customer_id AND j.version = q.version AND j.state = 'pending')) "
    "ORDER BY q.id LIMIT :limit FOR UPDATE OF q SKIP LOCKED"
)
_DELETE = text("DELETE FROM embedding_queue WHERE id = ANY(CAST(:ids AS bigint[]))")
_DEPTH = text("SELECT count(*) FROM embedding_queue")


@dataclass
class Refreshed:
    """What one pass did: nodes re-encoded and written, and nodes left as they were."""

    written: int = 0
    unchanged: int = 0
    missing: int = 0
    claimed: int = 0

    def add(self, other: Refreshed) -> None:
        self.written += other.written
        self.unchanged += other.unchanged
        self.missing += other.missing
        self.claimed += other.claimed


async def _check_dimensions(embedder: Embedder) -> None:
    # Reading the width loads the model on first use: seconds, so not on the event loop.
    dimensions = await asyncio.to_thread(lambda: embedder.dimensions)
    if dimensions != INDEX_DIMENSIONS:
        raise RuntimeError(
            f"model {embedder.model_id} gives {dimensions} dimensions but the vector "
            f"indexes hold {INDEX_DIMENSIONS}; add a schema migration for the new width"
        )


async def refresh(
    graph: GraphClient,
    embedder: Embedder,
    target: Target,
    sources: Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    force: bool = False,
) -> Refreshed:
    """Encode and store the embeddings of `sources` whose text changed (all if `force`).

    `sources` are rows of `graph.search.EMBEDDING_SOURCES`: id, customer_id,
    version, props and the stored embedding_hash.
    """
    outcome = Refreshed()
    todo: list[dict[str, Any]] = []
    for source in sources:
        body = embedding_text(target, source["props"])
        digest = content_hash(embedder.model_id, body)
        if not force and digest == source["embedding_hash"]:
            outcome.unchanged += 1
            continue
        todo.append(
            {
                "id": source["id"],
                "customer_id": source["customer_id"],
                "version": source["version"],
                "hash": digest,
                "text": body,
            }
        )
    # A few batches per encode call (sentence-transformers sorts each call's texts
    # by length, so bigger calls pad less), and each chunk's Neo4j write overlaps
    # the next chunk's encoding: index maintenance costs Neo4j about a third of
    # the encoding time, and would otherwise add to it.
    step = batch_size * ENCODE_BATCHES
    # Similar lengths in a batch mean little padding (sentence-transformers only
    # sorts within one call).
    todo.sort(key=lambda row: len(row["text"]))
    writing: asyncio.Task[int] | None = None
    try:
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            vectors = await encode(embedder, [row["text"] for row in chunk])
            rows = [
                {k: v for k, v in row.items() if k != "text"} | {"vector": vector.tolist()}
                for row, vector in zip(chunk, vectors, strict=True)
            ]
            if writing is not None:
                outcome.written += await writing
            writing = asyncio.create_task(embedding_store.write_embeddings(graph, target, rows))
        if writing is not None:
            outcome.written += await writing
            writing = None
    finally:
        if writing is not None:  # encoding failed: do not leave the write running alone
            writing.cancel()
            with contextlib.suppress(BaseException):
                await writing
    EMBEDDINGS_WRITTEN.labels(entity_type=target).inc(outcome.written)
    EMBEDDINGS_UNCHANGED.labels(entity_type=target).inc(outcome.unchanged)
    return outcome


async def embed_queued(resources: Resources, embedder: Embedder | None = None) -> Refreshed:
    """Claim one batch of queued rows, bring their embeddings up to date, delete the rows."""
    batch_size = resources.settings.embedding_batch_size
    outcome = Refreshed()
    async with unit_of_work(resources.sessions) as session:
        claimed = (await session.execute(_CLAIM, {"limit": batch_size * CLAIM_BATCHES})).all()
        if not claimed:
            return outcome
        # Only now the model is needed (an idle process never loads it).
        embedder = embedder or embedder_of(resources)
        await _check_dimensions(embedder)
        outcome.claimed = len(claimed)
        # Duplicates (one row per upsert) collapse to one node each.
        wanted: dict[Target, dict[str, str]] = {t: {} for t in TARGETS}
        for row in claimed:
            wanted[cast(Target, row.entity_type)][str(row.entity_id)] = str(row.customer_id)
        for target, nodes in wanted.items():
            if not nodes:
                continue
            sources = await embedding_store.embedding_sources(
                resources.graph,
                target,
                [{"id": node_id, "customer_id": customer} for node_id, customer in nodes.items()],
            )
            outcome.missing += len(nodes) - len(sources)  # deleted since: nothing to embed
            outcome.add(
                await refresh(resources.graph, embedder, target, sources, batch_size=batch_size)
            )
        await session.execute(_DELETE, {"ids": [row.id for row in claimed]})
    return outcome


async def queue_depth(resources: Resources) -> int:
    """Rows in the queue now; also sets the Prometheus gauge."""
    async with resources.sessions() as session:
        depth = int((await session.execute(_DEPTH)).scalar_one())
    EMBEDDING_QUEUE_DEPTH.set(depth)
    return depth


async def embedding_job(resources: Resources) -> Refreshed:
    """The background loop's job: drain the queue (within a time budget), sample its depth."""
    total = Refreshed()
    started = time.monotonic()
    try:
        while time.monotonic() - started < JOB_BUDGET_SECONDS:
            outcome = await embed_queued(resources)
            total.add(outcome)
            if outcome.claimed == 0:
                break
    finally:
        await queue_depth(resources)
    if total.claimed:
        log.info(
            "embeddings.refreshed",
            claimed=total.claimed,
            written=total.written,
            unchanged=total.unchanged,
            missing=total.missing,
        )
    return total


async def reembed(
    resources: Resources,
    targets: Sequence[Target],
    *,
    customer_id: uuid.UUID | None = None,
    force: bool = False,
    page_size: int = 512,
    progress: Callable[[Target, int, int], None] | None = None,
) -> Refreshed:
    """Bring every node's embedding up to date with the current model (`overwatch reembed`).

    Nodes whose hash already matches the model and text are skipped unless
    `force`, so an interrupted run simply continues where it stopped.
    `progress(target, done, total)` is called after each page.
    """
    embedder = embedder_of(resources)
    await _check_dimensions(embedder)
    tenant = str(customer_id) if customer_id else None
    total = Refreshed()
    for target in targets:
        count = await embedding_store.count_all(resources.graph, target, tenant)
        done, after = 0, None
        if progress:
            progress(target, 0, count)
        while True:
            page = await embedding_store.all_sources(
                resources.graph, target, tenant, after, page_size
            )
            if not page:
                break
            total.add(
                await refresh(
                    resources.graph,
                    embedder,
                    target,
                    page,
                    batch_size=resources.settings.embedding_batch_size,
                    force=force,
                )
            )
            done += len(page)
            after = page[-1]["id"]
            if progress:
                progress(target, done, count)
    return total
