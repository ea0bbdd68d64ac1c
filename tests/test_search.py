"""Embeddings, the embedding worker, and semantic / hybrid search, on real Neo4j and Postgres.

Search-quality tests use the real model (all-MiniLM-L6-v2 from the installed
package, offline); worker and isolation tests use the FakeEmbedder.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from api.search.embedder import EXTRAS_KEY
from api.search.embedding_worker import embed_queued, embedding_job, queue_depth, reembed
from bench.search import with_fresh_ids
from embeddings import CachedEmbedder, FakeEmbedder, content_hash, embedding_text, load_embedder
from graph import search as graph_search
from graph.driver import GraphClient
from graph.search import lucene_query
from tests.conftest import Tenant
from tests.test_graph import make_node, make_venue

V1 = "/api/v1"
SEARCH_SET = Path(__file__).resolve().parent.parent / "bench" / "data" / "search_set.json"


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def real_model() -> CachedEmbedder:
    return load_embedder()


def _swap(app: Any, embedder: Any) -> Any:
    extras = app.state.resources.extras
    previous = extras.get(EXTRAS_KEY)
    extras[EXTRAS_KEY] = embedder
    return previous


@pytest.fixture
def fake_embedder(app):
    fake = FakeEmbedder()
    previous = _swap(app, fake)
    yield fake
    _swap(app, previous)


@pytest.fixture
def real_embedder(app, real_model):
    previous = _swap(app, real_model)
    yield real_model
    _swap(app, previous)


async def run_worker(app) -> Any:
    return await embedding_job(app.state.resources)


async def stored(graph: GraphClient, label_query: str, node_id: str) -> dict[str, Any]:
    rows = await graph.read("test.embedding", label_query, {"id": node_id})
    return rows[0] if rows else {}


VENUE_EMBEDDING = (
    "MATCH (n:Venue {id: $id}) RETURN n.embedding AS embedding, n.embedding_hash AS hash"
)
NODE_EMBEDDING = (
    "MATCH (n:WorldNode {id: $id}) RETURN n.embedding AS embedding, n.embedding_hash AS hash"
)


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


async def queued(pg, entity_id: str) -> int:
    return await pg.fetchval(
        "SELECT count(*) FROM embedding_queue WHERE entity_id = $1::uuid", entity_id
    )


# ------------------------------------------------------------------ embedder units
def test_fake_embedder_is_deterministic_normalised_and_lexical():
    fake = FakeEmbedder()
    a, b, c, a2 = fake.encode(
        ["north loading dock", "loading dock south", "helipad", "north loading dock"]
    )
    assert np.allclose(a, a2) and abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert float(a @ b) > float(a @ c) + 0.3
    assert fake.calls == 1 and fake.texts_encoded == 4


def test_cache_encodes_each_distinct_text_once():
    fake = FakeEmbedder()
    cached = CachedEmbedder(fake)
    first = cached.encode(["dock", "dock", "gate"])
    assert fake.texts_encoded == 2
    again = cached.encode(["gate", "dock"])
    assert fake.texts_encoded == 2 and fake.calls == 1
    assert np.allclose(again[1], first[0])
    assert cached.hash("dock") == content_hash(fake.model_id, "dock")


def test_real_model_loads_offline_and_ranks_meaning(real_model):
    vectors = real_model.encode(
        ["loading dock where trucks unload", "delivery bay for lorries", "rooftop helipad"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
    assert real_model.model_id == "sentence-transformers/all-MiniLM-L6-v2"


def test_embedding_text_uses_name_kind_and_description():
    text = embedding_text(
        "world_node", {"name": "Gate C", "kind": "PerchPoint", "description": "Ledge"}
    )
    assert text == "Gate C. perch point. Ledge"
    assert (
        embedding_text("venue", {"name": "Eden Park", "tags": ["stadium"]}) == "Eden Park. stadium"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("loading dock", "loading dock"),
        ("name:x OR *", "name\\:x or"),
        ('"unbalanced (quote', '\\"unbalanced \\(quote'),
        ("a && b || !c", "a b \\!c"),
        ("*** ??? ~~~", None),
        ("C++ NOT java/script", "C\\+\\+ not java\\/script"),
    ],
)
def test_lucene_query_escapes_everything_the_user_types(raw, expected):
    assert lucene_query(raw) == expected


# ------------------------------------------------------------------ worker
async def test_worker_embeds_new_venue_skips_unchanged_text_and_moves_the_gauge(
    client, app, tenant: Tenant, graph, pg, fake_embedder
):
    venue = await make_venue(client, tenant, name="Eden Park", description="Rugby stadium")
    node = await make_node(client, tenant, venue["id"], "Zone", "North stand")
    assert await queued(pg, venue["id"]) == 1 and await queued(pg, node["id"]) == 1
    assert (await stored(graph, VENUE_EMBEDDING, venue["id"])).get("embedding") is None

    depth_before = await queue_depth(app.state.resources)
    assert gauge("overwatch_embedding_queue_depth") == depth_before >= 2
    await run_worker(app)
    assert gauge("overwatch_embedding_queue_depth") < depth_before
    assert await queued(pg, venue["id"]) == 0 and await queued(pg, node["id"]) == 0
    metrics = (await client.get("/metrics")).text
    assert "overwatch_embedding_queue_depth" in metrics

    got = await stored(graph, VENUE_EMBEDDING, venue["id"])
    assert len(got["embedding"]) == 384
    expected = fake_embedder.encode(["Eden Park. mall. Rugby stadium"])[0]
    assert np.allclose(np.array(got["embedding"]), expected, atol=1e-5)
    assert got["hash"] == content_hash(fake_embedder.model_id, "Eden Park. mall. Rugby stadium")
    encoded = fake_embedder.texts_encoded

    # A change that leaves the text alone is queued, but not re-encoded.
    unchanged = await client.patch(
        f"{V1}/venues/{venue['id']}", headers=tenant.headers, json={"properties": {"levels": 3}}
    )
    assert unchanged.status_code == 200
    assert await queued(pg, venue["id"]) == 1
    skipped_before = (
        REGISTRY.get_sample_value("overwatch_embeddings_unchanged_total", {"entity_type": "venue"})
        or 0
    )
    await run_worker(app)
    assert fake_embedder.texts_encoded == encoded
    assert (
        REGISTRY.get_sample_value("overwatch_embeddings_unchanged_total", {"entity_type": "venue"})
        or 0
    ) == skipped_before + 1
    assert (await stored(graph, VENUE_EMBEDDING, venue["id"]))["hash"] == got["hash"]
    assert await queued(pg, venue["id"]) == 0

    # New text: encoded once, stored, and the embedding survives later projections.
    changed = await client.patch(
        f"{V1}/venues/{venue['id']}", headers=tenant.headers, json={"description": "Cricket ground"}
    )
    assert changed.status_code == 200
    await run_worker(app)
    assert fake_embedder.texts_encoded == encoded + 1
    after = await stored(graph, VENUE_EMBEDDING, venue["id"])
    assert after["hash"] == content_hash(fake_embedder.model_id, "Eden Park. mall. Cricket ground")


async def test_worker_leaves_deleted_nodes_and_drops_their_rows(
    client, app, tenant: Tenant, pg, fake_embedder
):
    venue = await make_venue(client, tenant)
    node = await make_node(client, tenant, venue["id"], "Zone", "Atrium")
    deleted = await client.delete(f"{V1}/world-model/nodes/{node['id']}", headers=tenant.headers)
    assert deleted.status_code == 200
    outcome = await run_worker(app)
    assert await queued(pg, node["id"]) == 0
    assert outcome.missing >= 1


async def test_worker_waits_while_the_change_is_pending_in_the_journal(
    client, app, tenant: Tenant, pg, graph, fake_embedder
):
    venue = await make_venue(client, tenant)
    node = await make_node(client, tenant, venue["id"], "Zone", "Atrium")
    await run_worker(app)
    # Mark the node's next change as not yet applied: the worker must not read stale text.
    patched = await client.patch(
        f"{V1}/world-model/nodes/{node['id']}", headers=tenant.headers, json={"name": "Atrium east"}
    )
    version = patched.json()["version"]
    # The tenant's watermark (journal_applied) back below that change: pending.
    through = await pg.fetchval(
        "UPDATE journal_applied a SET through = $2 - 1 FROM journal_applied o "
        "WHERE a.customer_id = $1::uuid AND o.customer_id = a.customer_id RETURNING o.through",
        tenant.id,
        version,
    )
    assert through >= version
    try:
        await run_worker(app)
        assert await queued(pg, node["id"]) == 1
    finally:
        await pg.execute(
            "UPDATE journal_applied SET through = $2 WHERE customer_id = $1::uuid",
            tenant.id,
            through,
        )
    await run_worker(app)
    assert await queued(pg, node["id"]) == 0
    got = await stored(graph, NODE_EMBEDDING, node["id"])
    assert got["hash"] == content_hash(fake_embedder.model_id, "Atrium east. zone")


async def test_concurrent_workers_share_the_queue_without_double_work(
    client, app, tenant: Tenant, pg, fake_embedder
):
    venue = await make_venue(client, tenant)
    response = await client.post(
        f"{V1}/world-model/nodes/batch",
        headers=tenant.headers,
        json={
            "nodes": [
                {"venue_id": venue["id"], "kind": "Zone", "name": f"Zone {i}"} for i in range(40)
            ]
        },
    )
    assert response.status_code == 200, response.text
    await run_worker(app)  # whatever earlier tests left behind
    await client.patch(
        f"{V1}/venues/{venue['id']}", headers=tenant.headers, json={"description": "renamed"}
    )
    nodes = (
        await client.get(f"{V1}/world-model/nodes?venue_id={venue['id']}", headers=tenant.headers)
    ).json()["items"]
    for node in nodes:
        await client.patch(
            f"{V1}/world-model/nodes/{node['id']}",
            headers=tenant.headers,
            json={"description": "now with a description"},
        )
    encoded = fake_embedder.texts_encoded
    resources = app.state.resources
    first, second = await asyncio.gather(embed_queued(resources), embed_queued(resources))
    # SKIP LOCKED: the two claims are disjoint, so each node is encoded once.
    assert first.claimed + second.claimed == 41
    assert first.written + second.written == 41
    assert fake_embedder.texts_encoded == encoded + 41
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM embedding_queue WHERE customer_id = $1::uuid", tenant.id
        )
        == 0
    )


def test_embedding_worker_loop_follows_the_setting(settings):
    from main import process_loops

    assert "embedding_worker" in [name for name, _, _ in process_loops(settings)]
    off = settings.model_copy(update={"embedding_worker": False})
    assert "embedding_worker" not in [name for name, _, _ in process_loops(off)]


async def test_reembed_brings_a_tenant_up_to_date_after_a_model_change(
    client, app, tenant: Tenant, graph, fake_embedder
):
    venue = await make_venue(client, tenant, name="Eden Park")
    node = await make_node(client, tenant, venue["id"], "Zone", "North stand")
    await run_worker(app)
    resources = app.state.resources
    tenant_id = uuid.UUID(tenant.id)
    done: list[tuple[str, int, int]] = []
    same = await reembed(
        resources,
        ["venue", "world_node"],
        customer_id=tenant_id,
        progress=lambda t, n, total: done.append((t, n, total)),
    )
    assert (same.written, same.unchanged) == (0, 2)
    assert done[-1] == ("world_node", 1, 1)
    # A new model changes every hash: everything is re-encoded once, then never again.
    other_model = FakeEmbedder(model_id="fake-model-2")
    _swap(app, other_model)
    switched = await reembed(resources, ["venue", "world_node"], customer_id=tenant_id)
    assert (switched.written, switched.unchanged) == (2, 0)
    assert (await stored(graph, NODE_EMBEDDING, node["id"]))["hash"] == content_hash(
        "fake-model-2", "North stand. zone"
    )
    again = await reembed(resources, ["world_node"], customer_id=tenant_id)
    assert (again.written, again.unchanged) == (0, 1)
    forced = await reembed(resources, ["world_node"], customer_id=tenant_id, force=True)
    assert forced.written == 1 and other_model.texts_encoded == 3


# ------------------------------------------------------------------ search quality (real model)
def _search_set() -> dict[str, Any]:
    return json.loads(SEARCH_SET.read_text(encoding="utf-8"))


async def load_search_set(client, tenant: Tenant) -> dict[str, Any]:
    data = with_fresh_ids(_search_set())
    for venue in data["venues"]:
        response = await client.post(f"{V1}/venues", headers=tenant.headers, json=venue)
        assert response.status_code == 201, response.text
    response = await client.post(
        f"{V1}/world-model/nodes/batch", headers=tenant.headers, json={"nodes": data["nodes"]}
    )
    assert response.status_code == 200, response.text
    return data


def recall_at(ids: list[str], relevant: list[str], k: int = 10) -> float:
    return len(set(ids[:k]) & set(relevant)) / min(len(relevant), k)


async def test_search_quality_on_the_committed_set(client, app, tenant: Tenant, real_embedder):
    data = await load_search_set(client, tenant)
    await run_worker(app)
    recalls: dict[str, list[float]] = {"hybrid": [], "vector": [], "fulltext": []}
    for query in data["queries"]:
        path = "venues/search" if query["target"] == "venue" else "world-model/search"
        for mode in recalls:
            response = await client.get(
                f"{V1}/{path}",
                headers=tenant.headers,
                params={"q": query["text"], "limit": 10, "mode": mode},
            )
            assert response.status_code == 200, response.text
            ids = [hit["id"] for hit in response.json()["items"]]
            recalls[mode].append(recall_at(ids, query["relevant"]))
    mean = {mode: sum(v) / len(v) for mode, v in recalls.items()}
    # Word matching, judged on this tenant's data alone: the API's fulltext
    # scores use the statistics of the whole index (every tenant's text), so
    # its recall moves with whatever else the index holds. BM25 over the
    # tenant's own texts is the same method without that dependence.
    words = [recall_at(bm25_ranking(query, data), query["relevant"]) for query in data["queries"]]
    mean["words_own_data"] = sum(words) / len(words)
    # Semantic search must beat word matching on paraphrased questions, and fusion
    # must keep most of it; the index's own fulltext must still find most.
    assert mean["vector"] >= 0.75, mean
    assert mean["hybrid"] >= 0.75, mean
    assert mean["fulltext"] >= 0.6, mean
    assert mean["vector"] > mean["words_own_data"] + 0.05, mean


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def bm25_ranking(query: dict[str, Any], data: dict[str, Any], k1: float = 1.2, b: float = 0.75):
    """Ids of the query's target type ranked by BM25 over the committed set only
    (the fields the fulltext indexes hold), ties by id."""
    fields = (
        ("name", "description", "address")
        if query["target"] == "venue"
        else (
            "name",
            "description",
        )
    )
    items = data["venues"] if query["target"] == "venue" else data["nodes"]
    docs = {item["id"]: _tokens(" ".join(item.get(f) or "" for f in fields)) for item in items}
    df: Counter[str] = Counter()
    for terms in docs.values():
        df.update(set(terms))
    n, average = len(docs), sum(len(t) for t in docs.values()) / len(docs)
    scores: dict[str, float] = {}
    for doc_id, terms in docs.items():
        tf, score = Counter(terms), 0.0
        for term in set(_tokens(query["text"])) & tf.keys():
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            score += (
                idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(terms) / average))
            )
        if score > 0:
            scores[doc_id] = score
    return sorted(scores, key=lambda doc_id: (-scores[doc_id], doc_id))


async def test_hybrid_hits_say_why_they_matched(client, app, tenant: Tenant, real_embedder):
    venue = await make_venue(
        client, tenant, name="Mainfreight Distribution Centre", description="Parcel warehouse"
    )
    dock = await make_node(
        client,
        tenant,
        venue["id"],
        "Door",
        "Dock Doors 1-12",
        description="Roller doors where trucks back in to unload pallets.",
    )
    await make_node(
        client, tenant, venue["id"], "Room", "Freezer Room", description="Refrigerated cold store."
    )
    await make_node(
        client,
        tenant,
        venue["id"],
        "Hazard",
        "Battery charging",
        description="Forklift batteries charge here.",
    )
    await run_worker(app)
    response = await client.get(
        f"{V1}/world-model/search",
        headers=tenant.headers,
        params={"q": "lorries dropping off deliveries"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    top = body["items"][0]
    assert top["id"] == dock["id"]
    assert top["matched_by"]["vector"]["rank"] == 1 and top["matched_by"]["fulltext"] is None
    assert top["item"]["name"] == "Dock Doors 1-12" and "embedding" not in top["item"]
    assert body["plan"]["vector"]["strategy"] == "exact"

    words = await client.get(
        f"{V1}/world-model/search", headers=tenant.headers, params={"q": "freezer"}
    )
    hit = words.json()["items"][0]
    assert hit["item"]["name"] == "Freezer Room"
    assert hit["matched_by"]["fulltext"]["rank"] == 1 and hit["matched_by"]["vector"]["rank"] == 1
    assert hit["score"] == pytest.approx(2 / 61, abs=1e-6)

    by_kind = await client.get(
        f"{V1}/world-model/search",
        headers=tenant.headers,
        params={"q": "unload trucks", "kind": "Hazard"},
    )
    assert [h["item"]["kind"] for h in by_kind.json()["items"]] == ["Hazard"]


async def test_similar_nodes_and_venues(client, app, tenant: Tenant, real_embedder):
    mall = await make_venue(client, tenant, name="Sylvia Park", description="Shopping mall")
    other_mall = await make_venue(client, tenant, name="Westfield", description="Shopping centre")
    await make_venue(
        client, tenant, name="Huntly Power Station", description="Coal power plant", tags=["energy"]
    )
    dock = await make_node(
        client,
        tenant,
        mall["id"],
        "Zone",
        "Service loading dock",
        description="Trucks unload goods here.",
    )
    bay = await make_node(
        client,
        tenant,
        other_mall["id"],
        "Zone",
        "Delivery bay",
        description="Delivery lorries unload here.",
    )
    await make_node(
        client, tenant, mall["id"], "Area", "Rooftop garden", description="Plants and benches."
    )
    await run_worker(app)
    near = await client.get(
        f"{V1}/world-model/nodes/{dock['id']}/similar?limit=1", headers=tenant.headers
    )
    assert near.status_code == 200, near.text
    assert [h["id"] for h in near.json()["items"]] == [bay["id"]]
    venues = await client.get(f"{V1}/venues/{mall['id']}/similar?limit=2", headers=tenant.headers)
    ids = [h["id"] for h in venues.json()["items"]]
    assert ids[0] == other_mall["id"] and mall["id"] not in ids


# ------------------------------------------------------------------ tenant filtering and recall
async def _random_nodes(graph: GraphClient, customer_id: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    venue_id = str(uuid.uuid4())
    await graph.write(
        "test.venue",
        "CREATE (:Venue {id: $id, customer_id: $c, version: 1, name: 'v'})",
        {"id": venue_id, "c": customer_id},
    )
    for start in range(0, count, 1000):
        size = min(1000, count - start)
        vectors = rng.standard_normal((size, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [{"id": str(uuid.uuid4()), "v": v.tolist()} for v in vectors]
        await graph.write(
            "test.vectors",
            """
            UNWIND $rows AS row
            CREATE (n:WorldNode {id: row.id, customer_id: $c, venue_id: $venue, kind: 'Zone',
                                 name: 'n', version: 1})
            WITH n, row CALL db.create.setNodeVectorProperty(n, 'embedding', row.v)
            """,
            {"rows": rows, "c": customer_id, "venue": venue_id},
        )


async def test_tenant_filtered_vector_search_matches_exact_search(make_tenant, graph):
    small, large = await make_tenant("small"), await make_tenant("large")
    await _random_nodes(graph, small.id, 60, seed=1)
    await _random_nodes(graph, large.id, 3000, seed=2)
    rng = np.random.default_rng(3)
    naive_short = big_found = 0
    for _ in range(5):
        query = rng.standard_normal(384)
        query = (query / np.linalg.norm(query)).tolist()
        exact = [
            h.id
            for h in await graph_search.exact_vector_search(
                graph, "world_node", small.id, query, 10
            )
        ]
        assert len(exact) == 10
        # The default rule (a small tenant is searched exactly) ...
        hits, plan = await graph_search.vector_search(graph, "world_node", small.id, query, 10)
        assert [h.id for h in hits] == exact and plan.strategy == "exact"
        # ... and the index path, forced, over-fetches until it has the same top 10.
        hits, plan = await graph_search.vector_search(
            graph, "world_node", small.id, query, 10, exact_max=0, max_k=10**7
        )
        assert plan.strategy == "ann" and plan.k, plan
        assert [h.id for h in hits] == exact
        # The large tenant through the index path agrees with exact search too.
        big_exact = [
            h.id
            for h in await graph_search.exact_vector_search(
                graph, "world_node", large.id, query, 10
            )
        ]
        hits, plan = await graph_search.vector_search(
            graph, "world_node", large.id, query, 10, exact_max=0, max_k=10**7
        )
        assert plan.strategy == "ann"
        big_found += len(set(h.id for h in hits) & set(big_exact))
        # What the rule prevents: top-10 of the shared index, then the tenant filter.
        rows = await graph.read(
            "test.naive",
            """
            CALL db.index.vector.queryNodes('world_node_embedding', 10, $v) YIELD node
            WHERE node.customer_id = $c RETURN count(node) AS n""",
            {"v": query, "c": small.id},
        )
        naive_short += rows[0]["n"] < 10
    assert naive_short == 5
    # The index is approximate (HNSW), and random 384-d vectors are its hardest
    # case: single queries have found 7 of the exact 10, and fresh databases 45
    # of the 50. A broken path finds next to none: 70 % over five queries.
    print(f"large tenant: {big_found} of 50 exact hits found through the index")
    assert big_found >= 35


async def test_ann_path_falls_back_to_exact_past_the_k_cap(make_tenant, graph):
    small = await make_tenant("tiny")
    await _random_nodes(graph, small.id, 30, seed=4)
    query = np.random.default_rng(5).standard_normal(384)
    query = (query / np.linalg.norm(query)).tolist()
    exact = [
        h.id
        for h in await graph_search.exact_vector_search(graph, "world_node", small.id, query, 10)
    ]
    hits, plan = await graph_search.vector_search(
        graph, "world_node", small.id, query, 10, exact_max=0, max_k=20
    )
    assert plan.strategy == "ann_then_exact"
    assert [h.id for h in hits] == exact


# ------------------------------------------------------------------ isolation
async def test_two_tenants_with_identical_data_only_find_their_own(
    client, app, make_tenant, fake_embedder
):
    alpha, beta = await make_tenant("alpha"), await make_tenant("beta")
    made: dict[str, dict[str, str]] = {}
    for t in (alpha, beta):
        venue = await make_venue(client, t, name="Harbour Mall", description="Shopping centre")
        node = await make_node(
            client, t, venue["id"], "Zone", "Loading dock", description="Trucks unload here"
        )
        made[t.id] = {"venue": venue["id"], "node": node["id"]}
    await run_worker(app)
    for me, other in ((alpha, beta), (beta, alpha)):
        mine, theirs = made[me.id], made[other.id]
        for mode in ("hybrid", "vector", "fulltext"):
            nodes = await client.get(
                f"{V1}/world-model/search",
                headers=me.headers,
                params={"q": "loading dock trucks", "mode": mode},
            )
            assert [h["id"] for h in nodes.json()["items"]] == [mine["node"]], mode
            venues = await client.get(
                f"{V1}/venues/search",
                headers=me.headers,
                params={"q": "harbour mall shopping", "mode": mode},
            )
            assert [h["id"] for h in venues.json()["items"]] == [mine["venue"]], mode
        filtered = await client.get(
            f"{V1}/world-model/search",
            headers=me.headers,
            params={"q": "loading dock", "venue_id": theirs["venue"]},
        )
        assert filtered.json()["items"] == []
        similar = await client.get(
            f"{V1}/world-model/nodes/{mine['node']}/similar", headers=me.headers
        )
        assert theirs["node"] not in [h["id"] for h in similar.json()["items"]]
        for path in (
            f"world-model/nodes/{theirs['node']}/similar",
            f"venues/{theirs['venue']}/similar",
        ):
            response = await client.get(f"{V1}/{path}", headers=me.headers)
            assert response.status_code == 404, path


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "params",
    [
        {},  # no q
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 501},
        {"q": "dock", "limit": 0},
        {"q": "dock", "limit": 51},
        {"q": "dock", "mode": "psychic"},
        {"q": "dock", "kind": "Dragon"},
        {"q": "dock", "venue_id": "not-a-uuid"},
    ],
)
async def test_bad_search_input_is_a_422(client, tenant: Tenant, params, fake_embedder):
    for path in ("world-model/search", "venues/search"):
        if path == "venues/search" and set(params) & {"kind", "venue_id"}:
            continue
        response = await client.get(f"{V1}/{path}", headers=tenant.headers, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert response.json()["error"]["code"] in ("validation_error", "unknown_kind")


async def test_lucene_syntax_is_searched_as_words_not_run(
    client, app, tenant: Tenant, fake_embedder
):
    venue = await make_venue(client, tenant)
    await make_node(client, tenant, venue["id"], "Zone", "Dock")
    await run_worker(app)
    for q in ("name:dock OR *", "dock~2 AND (x", "\\", '"', "*:*", "[a TO z]", "title:/re.*/"):
        response = await client.get(
            f"{V1}/world-model/search", headers=tenant.headers, params={"q": q}
        )
        assert response.status_code == 200, (q, response.text)


async def test_similar_needs_an_embedded_node_of_the_tenant(client, tenant: Tenant, fake_embedder):
    venue = await make_venue(client, tenant)
    node = await make_node(client, tenant, venue["id"], "Zone", "Atrium")
    pending = await client.get(
        f"{V1}/world-model/nodes/{node['id']}/similar", headers=tenant.headers
    )
    assert pending.status_code == 409 and pending.json()["error"]["code"] == "not_embedded"
    missing = await client.get(
        f"{V1}/world-model/nodes/{uuid.uuid4()}/similar", headers=tenant.headers
    )
    assert missing.status_code == 404
    too_many = await client.get(
        f"{V1}/venues/{venue['id']}/similar?limit=500", headers=tenant.headers
    )
    assert too_many.status_code == 422


async def test_venue_search_route_is_not_taken_for_a_venue_id(
    client, tenant: Tenant, fake_embedder
):
    response = await client.get(f"{V1}/venues/search?q=mall", headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "hybrid"


async def test_search_needs_a_key(client):
    response = await client.get(f"{V1}/world-model/search?q=dock")
    assert response.status_code == 401


async def test_large_tenant_count_is_reused_and_a_stale_one_still_answers_exactly(
    make_tenant, graph, monkeypatch
):
    # Counting a large tenant's nodes costs more than its search (100k nodes: ~300 ms):
    # the count and the index size are kept for a while. Here "large" is > 20.
    monkeypatch.setattr(graph_search, "EXACT_MAX_CANDIDATES", 20)
    monkeypatch.setattr(graph_search, "_SIZES", graph_search.TTLCache(maxsize=10, ttl=600))
    tenant = await make_tenant("cached-count")
    await _random_nodes(graph, tenant.id, 60, seed=6)
    asked: list[str] = []
    read = graph.read

    async def counting_read(name: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(name)
        return await read(name, *args, **kwargs)

    monkeypatch.setattr(graph, "read", counting_read)
    rng = np.random.default_rng(7)
    query = rng.standard_normal(384)
    query = (query / np.linalg.norm(query)).tolist()
    _, plan = await graph_search.vector_search(
        graph, "world_node", tenant.id, query, 10, exact_max=20
    )
    assert plan.strategy == "ann" and plan.candidates == 60
    assert asked.count("search.world_node.count") == 1
    # The tenant now has 560 nodes; the kept count says 60 (k sized for fewer),
    # and the answer is still the exact top 10.
    await _random_nodes(graph, tenant.id, 500, seed=8)
    found = 0
    for _ in range(3):
        query = rng.standard_normal(384)
        query = (query / np.linalg.norm(query)).tolist()
        exact = [
            h.id
            for h in await graph_search.exact_vector_search(
                graph, "world_node", tenant.id, query, 10
            )
        ]
        hits, plan = await graph_search.vector_search(
            graph, "world_node", tenant.id, query, 10, exact_max=20, max_k=10**7
        )
        assert plan.candidates == 60  # the kept count: no second count query
        assert len(hits) == 10
        found += len(set(h.id for h in hits) & set(exact))
    assert found >= 21  # HNSW on random vectors: see the test above
    assert asked.count("search.world_node.count") == 1
    assert asked.count("search.world_node.index_size") == 1
