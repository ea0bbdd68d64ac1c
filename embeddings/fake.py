"""A deterministic embedder for tests that are not about embeddings.

Each lower-cased word gets a fixed pseudo-random direction (seeded by its
hash); a text is the normalised sum of its words. Texts sharing words are
therefore similar, identical texts are identical, and nothing is loaded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from embeddings.base import Vectors, normalize

_WORD = re.compile(r"[a-z0-9]+")


class FakeEmbedder:
    def __init__(self, dimensions: int = 384, model_id: str = "fake-hash-embedder") -> None:
        self._dimensions = dimensions
        self._model_id = model_id
        self.calls = 0  # encode() calls, so tests can prove nothing was re-encoded
        self.texts_encoded = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def _word(self, word: str) -> Vectors:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
        return np.random.default_rng(seed).standard_normal(self._dimensions).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        self.texts_encoded += len(texts)
        out = np.zeros((len(texts), self._dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower()) or [""]
            for word in words:
                out[row] += self._word(word)
        return normalize(out)
