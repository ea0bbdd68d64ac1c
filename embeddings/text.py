"""The text a venue or world node is embedded from.

Name first (it carries most meaning), then what kind of thing it is (kind or
tags), then the description. Changing this changes every content hash, which
makes the worker re-embed everything once: that is intended.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MAX_CHARS = 2000  # MiniLM reads 256 word pieces; more text only costs time

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def kind_words(kind: str | None) -> str:
    """`PerchPoint` -> `perch point`."""
    return _CAMEL.sub(" ", kind).lower() if kind else ""


def _join(parts: Iterable[str | None]) -> str:
    text = ". ".join(p.strip() for p in parts if p and p.strip())
    return text[:MAX_CHARS]


def venue_text(props: Mapping[str, Any]) -> str:
    tags = ", ".join(str(t) for t in props.get("tags") or [])
    return _join([props.get("name"), tags, props.get("description")])


def world_node_text(props: Mapping[str, Any]) -> str:
    return _join([props.get("name"), kind_words(props.get("kind")), props.get("description")])


def embedding_text(entity_type: str, props: Mapping[str, Any]) -> str:
    if entity_type == "venue":
        return venue_text(props)
    if entity_type == "world_node":
        return world_node_text(props)
    raise ValueError(f"{entity_type} has no embedding")
