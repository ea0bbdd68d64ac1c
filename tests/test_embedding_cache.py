"""The embedder cache (embeddings/cache.py): bounded, least-recently-used eviction."""

from __future__ import annotations

import numpy as np

from embeddings import CachedEmbedder, FakeEmbedder


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    fake = FakeEmbedder()
    cached = CachedEmbedder(fake, max_entries=2)
    first = cached.encode(["dock", "gate"])
    cached.encode(["dock"])  # "dock" is now more recent than "gate"
    cached.encode(["helipad"])  # full: "gate" goes
    encoded = fake.texts_encoded
    again = cached.encode(["dock", "helipad"])
    assert fake.texts_encoded == encoded  # both still cached
    assert np.allclose(again[0], first[0])
    cached.encode(["gate"])
    assert fake.texts_encoded == encoded + 1  # evicted, so encoded again
    assert (cached.hits, cached.misses) == (3, 4)


def test_empty_input_gives_an_empty_matrix() -> None:
    cached = CachedEmbedder(FakeEmbedder())
    assert cached.encode([]).shape == (0, cached.dimensions)
