"""The store side of blobs: object keys, presigned forms, HEADs, checksums, promotion."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from api.core.errors import DependencyUnavailable
from api.core.resources import Resources
from relational.models import Blob

log = structlog.get_logger("api.blobs")


T = TypeVar("T")


MISSING_OBJECT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


HASH_CHUNK_BYTES = 1 << 20


STAGING_PREFIX = "staging/"


def object_key(customer_id: uuid.UUID, blob_id: uuid.UUID) -> str:
    """Where a blob lives: every object of a tenant is under `customers/<customer_id>/`."""
    return f"customers/{customer_id}/blobs/{blob_id}"


def staging_key(final_key: str) -> str:
    """Where upload forms put a blob's bytes until `complete` copies them to `final_key`.

    One prefix for every tenant, so an operator can expire abandoned uploads
    with a single lifecycle rule (see docs/blobs.md).
    """
    return STAGING_PREFIX + final_key


async def _store(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one blocking boto3 call in a thread; an unreachable store becomes a 503."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except BotoCoreError as exc:
        raise DependencyUnavailable(
            "the blob store is unavailable", details={"dependency": "s3"}
        ) from exc
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500:
            raise DependencyUnavailable(
                "the blob store is unavailable", details={"dependency": "s3"}
            ) from exc
        raise


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        head: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in MISSING_OBJECT_CODES:
            return None
        raise
    return head


def _sha256_of(s3: Any, bucket: str, key: str, etag: str) -> str | None:
    """Hash the object as stored; None if it was replaced since the HEAD (ETag changed)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {
            "PreconditionFailed",
            "412",
            *MISSING_OBJECT_CODES,
        }:
            return None
        raise
    digest = hashlib.sha256()
    try:
        for chunk in body.iter_chunks(chunk_size=HASH_CHUNK_BYTES):
            digest.update(chunk)
    finally:
        body.close()
    return digest.hexdigest()


def _stored_sha256(head: dict[str, Any]) -> str | None:
    """The store's own full-object SHA-256 (hex), when it kept one for this upload."""
    value = head.get("ChecksumSHA256")
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None  # none, or a composite checksum of multipart parts
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _promote(s3: Any, bucket: str, final_key: str) -> bool:
    """Copy the staging object to `final_key` inside the store, then delete it.

    False when nothing is staged. The copy keeps the content type (metadata
    directive COPY); one CopyObject takes up to 5 GiB, the cap of a presigned
    POST. Deleting after copying makes a retry after a crash harmless: either
    the staging object is still there and is copied again, or it is gone and
    the final object is what gets checked.
    """
    source = staging_key(final_key)
    try:
        s3.copy_object(Bucket=bucket, Key=final_key, CopySource={"Bucket": bucket, "Key": source})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in MISSING_OBJECT_CODES:
            return False
        raise
    s3.delete_object(Bucket=bucket, Key=source)
    return True


def _presign_post(resources: Resources, blob: Blob) -> dict[str, Any]:
    settings = resources.settings
    # The store checks the policy: exactly the staging key, this content type
    # and this size (content-length-range), signed by our credentials.
    post: dict[str, Any] = resources.s3_public.generate_presigned_post(
        Bucket=settings.blob_bucket,
        Key=staging_key(blob.object_key),
        Fields={"Content-Type": blob.content_type},
        Conditions=[
            {"Content-Type": blob.content_type},
            ["content-length-range", blob.declared_size, blob.declared_size],
        ],
        ExpiresIn=settings.blob_presign_expiry_seconds,
    )
    return post
