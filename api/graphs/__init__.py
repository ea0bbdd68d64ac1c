"""Analyst graph queries: neighbourhoods, paths, exports, named queries, admin Cypher.

May import: `api.core`, `api.journal`, `api.auth`.
"""
