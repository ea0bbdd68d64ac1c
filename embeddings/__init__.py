"""Sentence embeddings for venues and world nodes (DESIGN.md §6).

`load_embedder(settings-like values)` gives the process's embedder: the
sentence-transformers model named by `EMBEDDING_MODEL` (offline by default),
behind a content-hash cache. `FakeEmbedder` stands in for tests that are not
about embeddings.

May import: libraries only; never `api`, `graph` or `relational`.
"""

from embeddings.base import Embedder, Vectors, content_hash, normalize
from embeddings.cache import CachedEmbedder
from embeddings.fake import FakeEmbedder
from embeddings.sentence import PACKAGED_MODEL, SentenceTransformerEmbedder
from embeddings.text import embedding_text

# The vector indexes in cypher/migrations/0001_baseline.cypher are 384-wide;
# a model of another width needs a new index migration first.
INDEX_DIMENSIONS = 384


def load_embedder(model: str = PACKAGED_MODEL, *, batch_size: int = 64) -> CachedEmbedder:
    """The embedder a process uses: the named model behind a content-hash cache."""
    return CachedEmbedder(SentenceTransformerEmbedder(model, batch_size=batch_size))


__all__ = [
    "INDEX_DIMENSIONS",
    "PACKAGED_MODEL",
    "CachedEmbedder",
    "Embedder",
    "FakeEmbedder",
    "SentenceTransformerEmbedder",
    "Vectors",
    "content_hash",
    "embedding_text",
    "load_embedder",
    "normalize",
]
