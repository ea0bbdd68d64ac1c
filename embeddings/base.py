"""What every embedder is: texts in, L2-normalised float32 vectors out.

The content hash ties a stored vector to the exact text (and model) it was
computed from: a node whose `embedding_hash` equals the hash of its current
text is never re-encoded, and a model change alters every hash, so the same
comparison re-embeds everything after a switch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """A sentence embedder. `encode` returns one unit-length row per text, in order."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Vectors: ...


def content_hash(model_id: str, text: str) -> str:
    """The hash stored as `embedding_hash`: model and text, so either changing re-embeds."""
    return hashlib.sha256(f"{model_id}\n{text}".encode()).hexdigest()


def normalize(vectors: Vectors) -> Vectors:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)
