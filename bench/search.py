"""Search: quality on the labelled set, honest recall under tenant filtering, latency, throughput.

1. Quality: the committed set (bench/data/search_set.json) goes in through the
   API; the embedding worker embeds it; every labelled query runs through the
   API in hybrid, vector and fulltext mode: recall@10 and MRR@10.
2. Worker throughput: 2,000 distinct world-node texts go through the real
   path (API write -> queue -> worker -> Neo4j) and through raw
   `SentenceTransformer.encode` on the same texts, in the same run.
3. Scale: 100,000 world nodes shared by 10 tenants (vectors written straight
   to Neo4j: mixtures of the labelled set's real embeddings plus noise, so
   they compete with the real ones). Recall@10 of the tenant-filtered vector
   path against exact brute-force search over the same vectors, for every
   tenant and query; p50/p95 latency of hybrid search through HTTP, query
   embedding included. Everything written is deleted afterwards.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from api.core.resources import Resources
from api.search.embedder import EXTRAS_KEY
from api.search.embedding_worker import embed_queued, queue_depth
from bench.harness import BenchContext, Result, percentile
from embeddings import embedding_text, load_embedder
from embeddings.sentence import SentenceTransformerEmbedder
from graph import search as graph_search
from graph.driver import GraphClient

DATA = Path(__file__).resolve().parent / "data" / "search_set.json"
TENANTS = 10
BULK_NODES = 100_000
BULK_BATCH = 5_000
THROUGHPUT_TEXTS = 2_000
LATENCY_ROUNDS = 3
K = 10
BULK_PREFIX = "bench-search-"  # tenant ids of bulk-only tenants (no customer row)

BULK_INSERT = """
UNWIND $rows AS row
CREATE (n:WorldNode {id: row.id, customer_id: row.customer_id, venue_id: row.venue_id,
                     kind: row.kind, name: row.name, version: 1})
WITH n, row CALL db.create.setNodeVectorProperty(n, 'embedding', row.vector)
"""
LEFTOVERS = """
MATCH (n:WorldNode) WHERE n.customer_id STARTS WITH 'bench-search-'
WITH n LIMIT 10000 DETACH DELETE n RETURN count(*) AS deleted
"""
DELETE_BATCH = """
MATCH (n) WHERE n.customer_id IN $tenants
WITH n LIMIT 10000 DETACH DELETE n RETURN count(*) AS deleted
"""


def recall_at(ids: Sequence[str], relevant: Sequence[str], k: int = K) -> float:
    """|relevant in top k| / min(|relevant|, k): 1.0 means nothing better was possible."""
    return len(set(ids[:k]) & set(relevant)) / min(len(relevant), k)


def reciprocal_rank(ids: Sequence[str], relevant: Sequence[str], k: int = K) -> float:
    for rank, found in enumerate(ids[:k], start=1):
        if found in relevant:
            return 1.0 / rank
    return 0.0


def with_fresh_ids(data: dict[str, Any]) -> dict[str, Any]:
    """The set with new ids (relevance labels remapped): each run loads its own copy, so a
    copy left behind by an interrupted run can never shadow this one."""
    fresh: dict[str, str] = {}

    def new(old: str) -> str:
        return fresh.setdefault(old, str(uuid.uuid4()))

    return {
        "venues": [v | {"id": new(v["id"])} for v in data["venues"]],
        "nodes": [n | {"id": new(n["id"]), "venue_id": new(n["venue_id"])} for n in data["nodes"]],
        "queries": [q | {"relevant": [new(r) for r in q["relevant"]]} for q in data["queries"]],
    }


def _throughput_nodes(data: dict[str, Any], venue_id: str) -> list[dict[str, Any]]:
    """THROUGHPUT_TEXTS distinct, realistic texts: the labelled nodes in new places."""
    places = [
        "north wing",
        "south wing",
        "east side",
        "west side",
        "level 2",
        "level 3",
        "basement",
        "mezzanine",
        "annex",
    ]
    nodes = []
    for i in range(THROUGHPUT_TEXTS):
        base = data["nodes"][i % len(data["nodes"])]
        place = places[(i // len(data["nodes"])) % len(places)]
        nodes.append(
            {
                "id": str(uuid.uuid4()),
                "venue_id": venue_id,
                "kind": base["kind"],
                "name": f"{base['name']} ({place} {i})",
                "description": f"{base['description']} Located in the {place}.",
            }
        )
    return nodes


async def _load_labelled(client: httpx.AsyncClient, data: dict[str, Any]) -> None:
    for venue in data["venues"]:
        (await client.post("/api/v1/venues", json=venue)).raise_for_status()
    (
        await client.post("/api/v1/world-model/nodes/batch", json={"nodes": data["nodes"]})
    ).raise_for_status()


async def _drain(resources: Resources) -> int:
    written = 0
    while True:
        outcome = await embed_queued(resources)
        written += outcome.written
        if outcome.claimed == 0:
            return written


async def _quality(client: httpx.AsyncClient, data: dict[str, Any]) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, list[float]]] = {
        m: {"recall": [], "mrr": []} for m in ("hybrid", "vector", "fulltext")
    }
    for query in data["queries"]:
        path = (
            "/api/v1/venues/search" if query["target"] == "venue" else "/api/v1/world-model/search"
        )
        for mode, acc in scores.items():
            response = await client.get(path, params={"q": query["text"], "limit": K, "mode": mode})
            response.raise_for_status()
            ids = [hit["id"] for hit in response.json()["items"]]
            acc["recall"].append(recall_at(ids, query["relevant"]))
            acc["mrr"].append(reciprocal_rank(ids, query["relevant"]))
    return {mode: {k: sum(v) / len(v) for k, v in acc.items()} for mode, acc in scores.items()}


def _bulk_vectors(
    base: NDArray[np.float32], count: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Unit vectors near the real ones: a real vector, part of another, and noise."""
    first = base[rng.integers(0, len(base), count)]
    second = base[rng.integers(0, len(base), count)]
    noise = rng.standard_normal((count, base.shape[1])).astype(np.float32)
    noise *= 0.9 / math.sqrt(base.shape[1])
    mixed = first + 0.5 * second + noise
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


async def _write_bulk(
    graph: GraphClient, tenants: list[str], base: NDArray[np.float32], rng: np.random.Generator
) -> None:
    kinds = ["Zone", "Room", "Corridor", "PerchPoint", "Asset", "Camera", "Hazard", "Landmark"]
    per_tenant = BULK_NODES // len(tenants)
    venues = {t: str(uuid.uuid4()) for t in tenants}
    owners = [t for t in tenants for _ in range(per_tenant)]
    for start in range(0, len(owners), BULK_BATCH):
        chunk = owners[start : start + BULK_BATCH]
        vectors = _bulk_vectors(base, len(chunk), rng)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "customer_id": owner,
                "venue_id": venues[owner],
                "kind": kinds[(start + i) % len(kinds)],
                "name": f"synthetic {start + i}",
                "vector": vectors[i].tolist(),
            }
            for i, owner in enumerate(chunk)
        ]
        await graph.write("bench.search.bulk", BULK_INSERT, {"rows": rows})
        print(f"[bench] search: {start + len(chunk):,} bulk nodes written", flush=True)


async def _tenant_recall(
    graph: GraphClient, tenants: list[str], queries: NDArray[np.float32]
) -> dict[str, Any]:
    recalls: list[float] = []
    naive: list[float] = []
    strategies: dict[str, int] = {}
    ks: list[int] = []
    for tenant in tenants:
        for query in queries:
            vector = query.tolist()
            exact = [
                h.id
                for h in await graph_search.exact_vector_search(
                    graph, "world_node", tenant, vector, K
                )
            ]
            hits, plan = await graph_search.vector_search(graph, "world_node", tenant, vector, K)
            strategies[plan.strategy] = strategies.get(plan.strategy, 0) + 1
            ks += plan.k
            recalls.append(recall_at([h.id for h in hits], exact))
            # What the over-fetch rule prevents: the index's top 10, then the tenant filter.
            row = await graph.read(
                "bench.search.naive",
                """
                CALL db.index.vector.queryNodes('world_node_embedding', 10, $v) YIELD node
                WHERE node.customer_id = $c RETURN collect(node.id) AS ids""",
                {"v": vector, "c": tenant},
            )
            naive.append(recall_at(row[0]["ids"], exact))
    return {
        "recall": sum(recalls) / len(recalls),
        "naive": sum(naive) / len(naive),
        "strategies": strategies,
        "k_median": int(np.median(ks)) if ks else 0,
        "searches": len(recalls),
    }


async def latency(
    client: httpx.AsyncClient, texts: list[str], mode: str, rounds: int = LATENCY_ROUNDS
) -> list[float]:
    """Milliseconds per `/world-model/search` call, each text `rounds` times."""
    times: list[float] = []
    for _ in range(rounds):
        for text in texts:
            started = time.perf_counter()
            response = await client.get(
                "/api/v1/world-model/search", params={"q": text, "limit": K, "mode": mode}
            )
            response.raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return times


async def run(ctx: BenchContext) -> list[Result]:
    data = with_fresh_ids(json.loads(DATA.read_text(encoding="utf-8")))
    settings = ctx.settings.model_copy(
        update={"database_url": ctx.database_url, "embedding_worker": False}
    )
    resources = Resources.open(settings)
    graph = resources.graph
    rng = np.random.default_rng(2024)
    real_tenants: list[str] = []
    bulk_tenants: list[str] = []
    previous_worker = os.environ.get("EMBEDDING_WORKER")
    # The API server embeds queries only; this process runs the worker, so its
    # throughput is measured alone.
    os.environ["EMBEDDING_WORKER"] = "false"
    results: list[Result] = []
    # Bulk tenants of an interrupted earlier run would skew the index.
    while (await graph.write("bench.search.leftovers", LEFTOVERS, {}))[0]["deleted"]:
        pass
    try:
        embedder = load_embedder(settings.embedding_model, batch_size=settings.embedding_batch_size)
        resources.extras[EXTRAS_KEY] = embedder
        async with ctx.server() as base:
            tenant_a, key_a = await ctx.new_tenant(base, "search-labelled")
            tenant_t, key_t = await ctx.new_tenant(base, "search-throughput")
            real_tenants += [tenant_a, tenant_t]
            async with (
                httpx.AsyncClient(
                    base_url=base, headers={"X-API-Key": key_a}, timeout=120
                ) as client_a,
                httpx.AsyncClient(
                    base_url=base, headers={"X-API-Key": key_t}, timeout=120
                ) as client_t,
            ):
                # ---- quality on the labelled set
                await _load_labelled(client_a, data)
                await _drain(resources)  # also warms the model up
                quality = await _quality(client_a, data)
                print(f"[bench] search: quality {json.dumps(quality)}", flush=True)

                # ---- worker throughput against raw encode, same texts, same run
                venue = (
                    await client_t.post("/api/v1/venues", json={"name": "Throughput venue"})
                ).json()
                await _drain(resources)
                nodes = _throughput_nodes(data, venue["id"])
                for start in range(0, len(nodes), 1000):
                    (
                        await client_t.post(
                            "/api/v1/world-model/nodes/batch",
                            json={"nodes": nodes[start : start + 1000]},
                        )
                    ).raise_for_status()
                texts = [embedding_text("world_node", n) for n in nodes]
                inner = embedder.inner
                assert isinstance(inner, SentenceTransformerEmbedder)
                model = inner._loaded()
                started = time.perf_counter()
                model.encode(
                    texts,
                    batch_size=settings.embedding_batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                raw_seconds = time.perf_counter() - started
                started = time.perf_counter()
                written = await _drain(resources)
                worker_seconds = time.perf_counter() - started
                assert written == len(nodes), (written, len(nodes))
                assert await queue_depth(resources) == 0
                results.append(
                    Result(
                        "embedding worker vs raw SentenceTransformer.encode",
                        "texts/s",
                        api=len(texts) / worker_seconds,
                        raw=len(texts) / raw_seconds,
                        notes={
                            "texts": len(texts),
                            "batch": settings.embedding_batch_size,
                            "target_ratio": ">=0.8",
                        },
                    )
                )

                # ---- 100k nodes, 10 tenants sharing the index
                base_vectors = embedder.encode(
                    [embedding_text("world_node", n) for n in data["nodes"]]
                )
                bulk_tenants = [tenant_a] + [
                    f"{BULK_PREFIX}{uuid.uuid4()}" for _ in range(TENANTS - 1)
                ]
                started = time.perf_counter()
                await _write_bulk(graph, bulk_tenants, base_vectors, rng)
                print(
                    f"[bench] search: bulk written in {time.perf_counter() - started:.0f}s",
                    flush=True,
                )
                query_vectors = embedder.encode(
                    [q["text"] for q in data["queries"] if q["target"] == "world_node"]
                )
                recall = await _tenant_recall(graph, bulk_tenants, query_vectors)
                print(f"[bench] search: tenant recall {json.dumps(recall)}", flush=True)

                node_texts = [q["text"] for q in data["queries"] if q["target"] == "world_node"]
                await latency(client_a, node_texts[:5], "hybrid")  # warm the server's model
                hybrid_ms = await latency(client_a, node_texts, "hybrid")
                vector_ms = await latency(client_a, node_texts, "vector")
    finally:
        if previous_worker is None:
            os.environ.pop("EMBEDDING_WORKER", None)
        else:
            os.environ["EMBEDDING_WORKER"] = previous_worker
        started = time.perf_counter()
        everyone = real_tenants + bulk_tenants
        while everyone:
            rows = await graph.write("bench.search.cleanup", DELETE_BATCH, {"tenants": everyone})
            if not rows or rows[0]["deleted"] == 0:
                break
        print(f"[bench] search: cleaned up in {time.perf_counter() - started:.0f}s", flush=True)
        await resources.close()

    for mode in ("hybrid", "vector", "fulltext"):
        results.append(
            Result(
                f"search quality, {mode}: recall@10",
                "% (labelled set)",
                api=100 * quality[mode]["recall"],
                notes={"mrr@10": round(quality[mode]["mrr"], 3), "queries": len(data["queries"])},
            )
        )
    results.append(
        Result(
            "tenant-filtered vector recall@10 vs exact",
            "% (10 tenants, 100k nodes)",
            api=100 * recall["recall"],
            notes={
                "target": ">=95",
                "naive_top10_then_filter": round(100 * recall["naive"], 1),
                "strategies": "/".join(f"{k}:{v}" for k, v in recall["strategies"].items()),
                "median_k": recall["k_median"],
                "searches": recall["searches"],
            },
        )
    )
    for mode, times in (("hybrid", hybrid_ms), ("vector", vector_ms)):
        results.append(
            Result(
                f"search latency p50, {mode}, HTTP, 100k nodes",
                "ms (query embedding included)",
                api=percentile(times, 50),
                notes={
                    "p95_ms": round(percentile(times, 95), 1),
                    "requests": len(times),
                    "tenant_nodes": BULK_NODES // TENANTS + len(data["nodes"]),
                },
            )
        )
    return results
