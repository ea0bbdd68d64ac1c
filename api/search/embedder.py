"""The process's embedder, shared by the search endpoints and the embedding worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from api.core.resources import Resources
from embeddings import Embedder, Vectors, load_embedder

EXTRAS_KEY = "embedder"


def embedder_of(resources: Resources) -> Embedder:
    """The embedder of this process, loaded on first use (tests may put their own in)."""
    embedder: Embedder | None = resources.extras.get(EXTRAS_KEY)
    if embedder is None:
        settings = resources.settings
        embedder = load_embedder(settings.embedding_model, batch_size=settings.embedding_batch_size)
        resources.extras[EXTRAS_KEY] = embedder
    return embedder


async def encode(embedder: Embedder, texts: Sequence[str]) -> Vectors:
    """Encode in a worker thread: the event loop keeps serving requests meanwhile."""
    return await asyncio.to_thread(embedder.encode, list(texts))
