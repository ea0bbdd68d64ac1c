"""Response bodies of the search endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Rank(BaseModel):
    rank: int = Field(description="1-based position in that list.")
    score: float = Field(
        description="Cosine similarity mapped to [0, 1] (vector) or the Lucene score (fulltext)."
    )


class MatchedBy(BaseModel):
    vector: Rank | None = Field(None, description="Rank among the semantic matches, if any.")
    fulltext: Rank | None = Field(None, description="Rank among the word matches, if any.")


class SearchHit(BaseModel):
    id: str
    score: float = Field(
        description="Hybrid: the reciprocal-rank-fusion score "
        "(sum of 1/(60+rank)); vector or fulltext mode: that list's score."
    )
    matched_by: MatchedBy
    item: dict[str, Any] = Field(description="The venue or world node, as GET returns it.")


class SearchResponse(BaseModel):
    query: str | None = None
    mode: str
    items: list[SearchHit]
    plan: dict[str, Any] = Field(
        description="How each list was answered under tenant filtering: "
        "`exact` or `ann` (vector, with the tenant's candidate count) and `index` "
        "(fulltext). Figures that depend on other tenants' data (the k tried) are "
        "never shown (see docs/search.md)."
    )
