"""The Overwatch Cloud service, in tiers (README "Layout"): `api.core` (plumbing) <-
`api.journal` (the write core) <- `api.auth` <- the domain packages <- the app (`api.router`,
`api.openapi`, `api.health`, `main.py`) and `api.cli`. `api.client` is the reference sync
client and imports no server code. Each tier imports only tiers below it (`make lint`).
"""
