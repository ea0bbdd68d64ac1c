"""Who is calling: API keys (HMAC-hashed, cached per process, revoked in every process at
once), principals and permissions, customers and workstations (`/auth/*`).

May import: `api.core`, `api.journal`. Every domain imports it.
"""
