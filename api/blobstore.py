"""S3-compatible blob storage helpers shared by startup and the blob service."""

from __future__ import annotations

import asyncio

import structlog
from botocore.exceptions import ClientError

from api.resources import Resources

log = structlog.get_logger("api.blobstore")


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
