"""The write core (DESIGN.md §3-4): entities and their validation, change sets, journal
records, the tenant transaction, applying to Neo4j, projection status, reconcile and
verify, sync envelopes and the generic entity writes the REST endpoints use.

May import: `api.core`, `graph`, `relational`; never a domain package.
"""
