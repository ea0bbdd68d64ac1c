"""The data of the search-at-scale bench (bench/search_scale.py): deterministic synthetic
tenants, their vectors and names, loading them into Neo4j and waiting for the vector index."""

from __future__ import annotations

import math
import os
import time
import uuid
from typing import Any

import numpy as np
from numpy.typing import NDArray

from graph.driver import GraphClient

NODES = int(os.environ.get("SCALE_NODES", "1000000"))


TENANTS = int(os.environ.get("SCALE_TENANTS", "10"))


QUERIES = int(os.environ.get("SCALE_QUERIES", "50"))


SEED = 15


BATCH = 4_000


DIMS = 384


KINDS = ["Zone", "Room", "Corridor", "PerchPoint", "Asset", "Camera", "Hazard", "Landmark"]


MARKER_GET = "MATCH (m:BenchScaleMarker) RETURN m {.*} AS m"


MARKER_SET = "MERGE (m:BenchScaleMarker {key: 'search_scale'}) SET m += $props"


COUNT_LOADED = (
    "MATCH (n:WorldNode) WHERE n.customer_id STARTS WITH 'bench-scale-' RETURN count(n) AS n"
)


INSERT = """
UNWIND $rows AS row
CREATE (n:WorldNode {id: row.id, customer_id: row.customer_id, venue_id: row.venue_id,
                     kind: row.kind, name: row.name, version: 1})
WITH n, row CALL db.create.setNodeVectorProperty(n, 'embedding', row.vector)
"""


DROP_INDEX = "DROP INDEX world_node_embedding IF EXISTS"


# The same definition as cypher/migrations/0001_baseline.cypher.
CREATE_INDEX = """
CREATE VECTOR INDEX world_node_embedding IF NOT EXISTS FOR (n:WorldNode) ON (n.embedding)
OPTIONS {indexConfig: {`vector.dimensions`: 384, `vector.similarity_function`: 'cosine'}}
"""


INDEX_STATE = """
SHOW INDEXES YIELD name, state, populationPercent WHERE name = 'world_node_embedding'
RETURN state, populationPercent
"""


DELETE_BATCH = """
MATCH (n:WorldNode) WHERE n.customer_id = $c
WITH n LIMIT 20000 DETACH DELETE n RETURN count(*) AS deleted
"""


RELABEL = """
MATCH (n:WorldNode) WHERE n.customer_id = $old AND n.version >= 0
WITH n LIMIT 20000 SET n.customer_id = $new RETURN count(*) AS moved
"""


def tenant_id(t: int) -> str:
    return f"bench-scale-{t}"


def node_id(t: int, i: int) -> str:
    return str(uuid.UUID(int=(0xB5CA1E << 104) | (t << 40) | i))


def venue_of(t: int) -> str:
    return str(uuid.UUID(int=(0xB5CA1F << 104) | t))


def tenant_vectors(base: NDArray[np.float32], t: int, count: int) -> NDArray[np.float32]:
    """Tenant t's vectors, the same on every run: a real vector, half of another, noise."""
    rng = np.random.default_rng([SEED, t])
    first = rng.integers(0, len(base), count)
    second = rng.integers(0, len(base), count)
    noise = rng.standard_normal((count, base.shape[1]), dtype=np.float32)
    noise *= 0.9 / math.sqrt(base.shape[1])
    mixed = base[first] + 0.5 * base[second] + noise
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    return mixed.astype(np.float32)


def tenant_names(
    t: int, count: int, base_names: list[str], base_kinds: list[str]
) -> list[tuple[str, str]]:
    rng = np.random.default_rng([SEED, t])
    first = rng.integers(0, len(base_names), count)  # same draw as tenant_vectors' first
    return [(f"{base_names[j]} {i}", base_kinds[j]) for i, j in enumerate(first.tolist())]


async def _index_online(graph: GraphClient, started: float) -> float:
    last = -1.0
    while True:
        rows = await graph.read("bench.scale.index_state", INDEX_STATE)
        state, pct = rows[0]["state"], float(rows[0]["populationPercent"])
        if state == "ONLINE":
            return time.perf_counter() - started
        if state == "FAILED":
            raise RuntimeError("world_node_embedding population FAILED; see neo4j.log")
        if pct - last >= 5:
            print(
                f"[bench] scale: index {state} {pct:.0f}% after "
                f"{time.perf_counter() - started:.0f}s",
                flush=True,
            )
            last = pct
        await _sleep(5)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _drop(graph: GraphClient, marker: dict[str, Any] | None) -> None:
    owners = [tenant_id(t) for t in range(TENANTS)]
    if marker and marker.get("relabelled"):
        owners.append(str(marker["relabelled"]))
    for owner in owners:
        while (await graph.write("bench.scale.drop", DELETE_BATCH, {"c": owner}))[0]["deleted"]:
            pass
    await graph.write("bench.scale.marker_drop", "MATCH (m:BenchScaleMarker) DETACH DELETE m", {})


async def _load(
    graph: GraphClient, base: NDArray[np.float32], names: list[str], kinds: list[str]
) -> dict[str, Any]:
    per_tenant = NODES // TENANTS
    await graph.run_schema("bench.scale.drop_index", DROP_INDEX)
    started = time.perf_counter()
    written = 0
    for t in range(TENANTS):
        vectors = tenant_vectors(base, t, per_tenant)
        labels = tenant_names(t, per_tenant, names, kinds)
        for start in range(0, per_tenant, BATCH):
            end = min(per_tenant, start + BATCH)
            chunk = vectors[start:end].tolist()
            rows = [
                {
                    "id": node_id(t, i),
                    "customer_id": tenant_id(t),
                    "venue_id": venue_of(t),
                    "kind": labels[i][1],
                    "name": labels[i][0],
                    "vector": chunk[i - start],
                }
                for i in range(start, end)
            ]
            await graph.write("bench.scale.insert", INSERT, {"rows": rows})
            written += len(rows)
            if written % 50_000 < BATCH:
                elapsed = time.perf_counter() - started
                print(
                    f"[bench] scale: {written:,} nodes in {elapsed:.0f}s "
                    f"({written / elapsed:,.0f}/s)",
                    flush=True,
                )
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    await graph.run_schema("bench.scale.create_index", CREATE_INDEX)
    index_seconds = await _index_online(graph, started)
    print(
        f"[bench] scale: loaded in {load_seconds:.0f}s, index online in {index_seconds:.0f}s",
        flush=True,
    )
    return {"load_seconds": load_seconds, "index_seconds": index_seconds}
