"""The `overwatch` command line: migrate, serve, stack, reconcile, projection, verify,
prune, seed-demo, reembed, export-openapi (`overwatch --help`).

Outside the service's tiers: it may import any of them; nothing in the service imports it.
"""

from api.cli import data, journal  # noqa: F401  (they register their commands on `app`)
from api.cli.main import app

__all__ = ["app"]
