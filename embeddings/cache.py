"""An in-process cache of vectors by content hash, in front of any embedder.

The stored `embedding_hash` already stops unchanged nodes from being
re-encoded; this cache also spares the model identical texts across nodes
(a hundred "Perch point" nodes) and repeated search queries.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from cachetools import LRUCache

from embeddings.base import Embedder, Vectors, content_hash


class CachedEmbedder:
    """Wraps an embedder; texts seen recently (same model) are answered from memory."""

    def __init__(self, inner: Embedder, max_entries: int = 20_000) -> None:
        self.inner = inner
        self.max_entries = max_entries
        # cachetools' LRU is not thread-safe on its own: every access holds the lock.
        self._vectors: LRUCache[str, Vectors] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    def hash(self, text: str) -> str:
        return content_hash(self.model_id, text)

    def encode(self, texts: Sequence[str]) -> Vectors:
        keys = [self.hash(t) for t in texts]
        found: dict[str, Vectors] = {}
        with self._lock:
            for key in keys:
                vector = self._vectors.get(key)  # a hit marks the entry recently used
                if vector is not None:
                    found[key] = vector
        # Each distinct missing text is encoded once, in one batched call.
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in found and key not in missing:
                missing[key] = text
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            encoded = self.inner.encode(list(missing.values()))
            with self._lock:
                for key, vector in zip(missing, encoded, strict=True):
                    found[key] = vector
                    self._vectors[key] = vector  # evicts the least recently used
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)
