"""Helpers for tests that run the API as real processes (crash, streams)."""

from __future__ import annotations

import os
import socket

from api.settings import Settings
from tests.conftest import ADMIN_KEY


def api_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of an API or CLI process pointed at the test servers."""
    return {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": settings.database_url,
        "NEO4J_URI": settings.neo4j_uri,
        "NEO4J_USER": settings.neo4j_user,
        "NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
        "API_KEY_PEPPER": settings.api_key_pepper.get_secret_value(),
        "ADMIN_API_KEY": ADMIN_KEY,
        "BLOB_ENDPOINT_URL": settings.blob_endpoint_url or "",
        "BLOB_BUCKET": settings.blob_bucket,
        "LOG_LEVEL": "WARNING",
        "RECONCILE_INTERVAL_SECONDS": "3600",
        "EMBEDDING_WORKER": "false",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
