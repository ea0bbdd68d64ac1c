"""PostgreSQL: the engine and sessions (with the transaction-ownership rule), and the
registry's tables.

May import: libraries only; never `api` or `graph`.
"""
