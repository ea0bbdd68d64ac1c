"""Neo4j: the driver wrapper, the tenant binding, schema migrations, the projection of
the journal, and the graph repositories (reads, traversals, search, named queries).

May import: libraries only; never `api` or `relational`.
"""
