"""An in-process cache of vectors by content hash, in front of any embedder.

The stored `embedding_hash` already stops unchanged nodes from being
re-encoded; this cache also spares the model identical texts across nodes
(a hundred "Perch point" nodes) and repeated search queries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from embeddings.base import Embedder, Vectors, content_hash


class CachedEmbedder:
    """Wraps an embedder; texts seen recently (same model) are answered from memory."""

    def __init__(self, inner: Embedder, max_entries: int = 20_000) -> None:
        self.inner = inner
        self.max_entries = max_entries
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
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
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
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
                    self._vectors[key] = vector
                    self._vectors.move_to_end(key)
                while len(self._vectors) > self.max_entries:
                    self._vectors.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)
