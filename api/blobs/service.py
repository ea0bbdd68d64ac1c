"""Blobs: presigned uploads and downloads, confirmed against the store, linked to the graph.

Bytes never pass through the API (except to check a declared SHA-256 the store
cannot vouch for, see `complete_upload`). The API signs a POST form for the
blob's *staging* key, the client uploads to the store, then calls `complete`:
the store copies the staging object to the blob's final key (server side),
and a HEAD of the final object confirms size, type and checksum before the
record becomes `available` and downloadable. No form is ever signed for a
final key, so a form that is still valid after `complete` can only write the
staging key again: verified bytes are immutable to the upload credential.
boto3 is blocking, so every store call runs in a worker thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from api.blobs import repository
from api.blobs.schemas import BlobOut, DownloadTicket, PresignedPost, UploadRequest, UploadTicket
from api.blobs.store import (
    _head,
    _presign_post,
    _promote,
    _sha256_of,
    _store,
    _stored_sha256,
    object_key,
    staging_key,
)
from api.core.blobstore import copy_client
from api.core.errors import Conflict, Invalid, NotFound
from api.core.pagination import decode_cursor, encode_cursor
from api.core.resources import Resources
from api.journal.envelopes import note_blobs
from relational.models import Blob

log = structlog.get_logger("api.blobs")


async def _upload_ticket(resources: Resources, blob: Blob) -> UploadTicket:
    expiry = resources.settings.blob_presign_expiry_seconds
    expires_at = datetime.now(UTC) + timedelta(seconds=expiry)  # signed after: never later
    post = await _store(_presign_post, resources, blob)
    return UploadTicket(
        blob_id=blob.id,
        object_key=blob.object_key,
        upload=PresignedPost(url=post["url"], fields=post["fields"]),
        expires_at=expires_at,
        expires_in=expiry,
        blob=BlobOut.model_validate(blob),
    )


async def get_blob(
    session: AsyncSession, customer_id: uuid.UUID, blob_id: uuid.UUID, *, for_update: bool = False
) -> Blob:
    """One of the tenant's blobs; another tenant's id is as unknown as a made-up one (404)."""
    blob = await repository.get(session, customer_id, blob_id, for_update=for_update)
    if blob is None:
        raise NotFound("blob not found")
    return blob


async def create_upload(
    session: AsyncSession, resources: Resources, customer_id: uuid.UUID, request: UploadRequest
) -> UploadTicket:
    """Check type, size and owner, record a `pending` blob and sign its upload form.

    Nothing is written when a check fails.
    """
    allowed = resources.settings.blob_content_types
    limit = allowed.get(request.content_type)
    if limit is None:
        raise Invalid(
            f"content type {request.content_type!r} is not allowed",
            code="content_type_not_allowed",
            details={"allowed": sorted(allowed)},
        )
    if request.size > limit:
        raise Invalid(
            f"{request.content_type} blobs may be at most {limit} bytes",
            code="blob_too_large",
            details={"size": request.size, "max_size": limit},
        )
    if (
        request.owner_type is not None
        and request.owner_id is not None
        and not (
            await repository.owner_exists(
                session, customer_id, request.owner_type, request.owner_id
            )
        )
    ):
        raise Invalid(
            f"no {request.owner_type} {request.owner_id} in this tenant",
            code="unknown_owner",
            details=[{"loc": ["owner_id"], "msg": "no such live entity"}],
        )
    blob_id = uuid.uuid4()
    blob = await repository.add(
        session,
        Blob(
            id=blob_id,
            customer_id=customer_id,
            object_key=object_key(customer_id, blob_id),
            content_type=request.content_type,
            declared_size=request.size,
            sha256=request.sha256,
            owner_type=request.owner_type,
            owner_id=request.owner_id,
            state="pending",
        ),
    )
    log.info(
        "blob.upload_issued",
        blob_id=str(blob.id),
        content_type=blob.content_type,
        size=blob.declared_size,
    )
    return await _upload_ticket(resources, blob)


async def reissue_upload(
    session: AsyncSession, resources: Resources, customer_id: uuid.UUID, blob_id: uuid.UUID
) -> UploadTicket:
    """A fresh upload form for a blob still `pending` (the first one expired or failed)."""
    blob = await get_blob(session, customer_id, blob_id)
    if blob.state != "pending":
        raise Conflict("this blob is already complete", code="blob_already_complete")
    return await _upload_ticket(resources, blob)


async def _reject(
    resources: Resources, blob: Blob, code: str, message: str, details: dict[str, Any]
) -> Invalid:
    """Delete the uploaded object that does not match its record; the record stays pending."""
    s3 = resources.s3
    await _store(s3.delete_object, Bucket=resources.settings.blob_bucket, Key=blob.object_key)
    log.warning("blob.upload_rejected", blob_id=str(blob.id), reason=code)
    return Invalid(f"{message}; the upload was deleted, upload again", code=code, details=details)


async def _hash_unlocked(
    session: AsyncSession, resources: Resources, blob: Blob, etag: str
) -> tuple[Blob, str]:
    """Hash the final object with no row lock and no connection held; then lock the
    row again and return it with the digest (409 `blob_changed` if the object hashed
    is no longer the one stored).

    Reading up to 2 GiB takes a while: a concurrent delete, or any other reader of
    the row lock, must not wait for it. Nothing is written in this transaction
    before the hash, so ending it (rollback) to release the lock and the pooled
    connection loses nothing. The bytes are streamed in HASH_CHUNK_BYTES chunks.
    """
    customer_id, blob_id, key = blob.customer_id, blob.id, blob.object_key
    bucket = resources.settings.blob_bucket
    await session.rollback()
    found = await _store(_sha256_of, resources.s3, bucket, key, etag)
    blob = await get_blob(session, customer_id, blob_id, for_update=True)
    if blob.state == "available":
        return blob, found or ""
    head = await _store(_head, resources.s3, bucket, key)
    if found is None or head is None or head.get("ETag") != etag:
        raise Conflict(
            "the object changed while it was checked; complete again", code="blob_changed"
        )
    return blob, found


async def complete_upload(
    session: AsyncSession, resources: Resources, customer_id: uuid.UUID, blob_id: uuid.UUID
) -> Blob:
    """Confirm the uploaded object and make the blob `available` (idempotent).

    The staged upload is first copied to the blob's final key, out of reach of
    the upload form, so what is checked below is exactly what downloads will
    serve. A HEAD of the final object must show exactly the declared size and
    content type. A declared SHA-256 is compared with the store's own
    full-object checksum when it has one, otherwise the object is read once
    and hashed here, without the row lock (`_hash_unlocked`). An object that
    does not match is deleted and the call answers 422; nothing uploaded yet
    answers 409. The row is locked otherwise, so a concurrent delete or
    completion waits for the short steps, never for the hash.
    """
    blob = await get_blob(session, customer_id, blob_id, for_update=True)
    if blob.state == "available":
        return blob
    bucket = resources.settings.blob_bucket
    await _store(_promote, copy_client(resources), bucket, blob.object_key)
    head = await _store(_head, resources.s3, bucket, blob.object_key)
    if head is None:
        raise Conflict("nothing has been uploaded for this blob yet", code="blob_not_uploaded")
    actual_size = int(head["ContentLength"])
    if actual_size != blob.declared_size:
        raise await _reject(
            resources,
            blob,
            "size_mismatch",
            f"uploaded {actual_size} bytes, declared {blob.declared_size}",
            {"declared_size": blob.declared_size, "actual_size": actual_size},
        )
    stored_type = str(head.get("ContentType", "")).strip().lower()
    if stored_type != blob.content_type:
        raise await _reject(
            resources,
            blob,
            "content_type_mismatch",
            f"uploaded as {stored_type!r}, declared {blob.content_type!r}",
            {"declared": blob.content_type, "actual": stored_type},
        )
    if blob.sha256 is not None:
        found = _stored_sha256(head)
        if found is None:
            blob, found = await _hash_unlocked(session, resources, blob, head["ETag"])
            if blob.state == "available":  # a concurrent complete finished meanwhile
                return blob
        if found != blob.sha256:
            raise await _reject(
                resources,
                blob,
                "checksum_mismatch",
                "the content does not match the declared sha256",
                {"declared": blob.sha256, "actual": found},
            )
    now = datetime.now(UTC)
    blob.state = "available"
    blob.actual_size = actual_size
    blob.completed_at = now
    blob.updated_at = now
    await session.flush()
    if blob.owner_id is not None:
        await note_blobs(session, customer_id, [blob.owner_id])
    log.info("blob.completed", blob_id=str(blob.id), size=actual_size)
    return blob


async def issue_download(
    session: AsyncSession, resources: Resources, customer_id: uuid.UUID, blob_id: uuid.UUID
) -> DownloadTicket:
    """A presigned GET for one of the tenant's `available` blobs."""
    blob = await get_blob(session, customer_id, blob_id)
    if blob.state != "available":
        raise Conflict(
            "this blob is not available yet: complete its upload first", code="blob_not_available"
        )
    settings = resources.settings
    expiry = settings.blob_presign_expiry_seconds
    expires_at = datetime.now(UTC) + timedelta(seconds=expiry)
    url = await _store(
        resources.s3_public.generate_presigned_url,
        "get_object",
        Params={"Bucket": settings.blob_bucket, "Key": blob.object_key},
        ExpiresIn=expiry,
    )
    return DownloadTicket(
        blob_id=blob.id,
        url=url,
        expires_at=expires_at,
        expires_in=expiry,
        content_type=blob.content_type,
        size=blob.actual_size or blob.declared_size,
    )


async def list_blobs(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    owner_type: str | None = None,
    owner_id: uuid.UUID | None = None,
    state: str | None = None,
) -> tuple[Sequence[Blob], str | None]:
    """A page of the tenant's blobs, newest first, and the cursor of the next page."""
    after = decode_cursor(cursor, datetime, uuid.UUID) if cursor is not None else None
    rows = await repository.page(
        session,
        customer_id,
        limit=limit + 1,
        after=after,
        owner_type=owner_type,
        owner_id=owner_id,
        state=state,
    )
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, None


async def delete_blob(
    session: AsyncSession, resources: Resources, customer_id: uuid.UUID, blob_id: uuid.UUID
) -> None:
    """Remove the record, the object and anything still staged for it.

    The row goes first (uncommitted): if the store then fails, the request
    rolls back and the record still points at its object. Deleting an object
    that was never uploaded is a no-op for S3.
    """
    blob = await get_blob(session, customer_id, blob_id, for_update=True)
    await repository.remove(session, blob)
    bucket = resources.settings.blob_bucket
    for key in (blob.object_key, staging_key(blob.object_key)):
        await _store(resources.s3.delete_object, Bucket=bucket, Key=key)
    log.info("blob.deleted", blob_id=str(blob.id))
