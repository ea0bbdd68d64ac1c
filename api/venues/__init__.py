"""Venues: every `/venues/*` route (CRUD, subgraph, search, similar, duplicates, merge)
and the venue merge service.

May import: `api.core`, `api.journal`, `api.auth`, and the search service (`api.search`).
"""
