"""S3-compatible blob storage helpers shared by startup and the blob service."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import structlog
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from api.core.resources import Resources

log = structlog.get_logger("api.core.blobstore")

# A server-side copy answers when it is done, and a store copies at disk and
# network speed (about 55 MB/s measured on the local SeaweedFS): a 5 GiB object,
# the largest one presigned POST takes, needs minutes, not the 10 s the API's
# other store calls may wait (api/core/resources.py).
COPY_READ_TIMEOUT_SECONDS = 900


def copy_client(resources: Resources) -> Any:
    """The S3 client for server-side copies: the API's own, with a longer read timeout.

    Made once per process and kept in `resources.extras` (boto3 clients are
    thread-safe, so the worker threads share it).
    """
    client = resources.extras.get("s3_copy")
    if client is None:
        settings = resources.settings
        client = boto3.client(
            "s3",
            endpoint_url=settings.blob_endpoint_url or None,
            region_name=settings.blob_region,
            aws_access_key_id=settings.blob_access_key_id,
            aws_secret_access_key=settings.blob_secret_access_key.get_secret_value(),
            config=resources.s3.meta.config.merge(
                BotoConfig(read_timeout=COPY_READ_TIMEOUT_SECONDS)
            ),
        )
        resources.extras["s3_copy"] = client
    return client


async def ensure_bucket(resources: Resources) -> None:
    """Create the blob bucket if missing (development convenience; logged, not fatal)."""
    bucket = resources.settings.blob_bucket

    def create() -> None:
        try:
            resources.s3.head_bucket(Bucket=bucket)
        except ClientError:
            resources.s3.create_bucket(Bucket=bucket)
            log.info("blobstore.bucket_created", bucket=bucket)

    try:
        await asyncio.to_thread(create)
    except Exception as exc:
        log.warning("blobstore.bucket_unavailable", bucket=bucket, error=str(exc)[:200])
