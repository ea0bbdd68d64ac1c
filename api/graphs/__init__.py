"""Analyst graph queries: neighbourhoods, paths, exports, named queries, admin Cypher."""
