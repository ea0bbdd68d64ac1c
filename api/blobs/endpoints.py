"""`/api/v1/blobs`: presigned uploads and downloads of imagery, maps and point clouds."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.auth.deps import Reader, Writer, tenant_of
from api.blobs import service
from api.blobs.schemas import (
    BlobOut,
    BlobPage,
    BlobState,
    DownloadTicket,
    OwnerType,
    UploadRequest,
    UploadTicket,
)
from api.core.deps import ResourcesDep, SessionDep
from api.journal.route import V1Route

router = APIRouter(prefix="/blobs", tags=["blobs"], route_class=V1Route)

UPLOAD_HOWTO = (
    "POST a multipart form to `upload.url` with every entry of `upload.fields`, then the "
    "content as the field `file` (last). Then call `POST /blobs/{blob_id}/complete`."
)


@router.post(
    "/upload-url",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadTicket,
    summary="Start an upload: record a pending blob, get a presigned POST form",
    description=UPLOAD_HOWTO,
)
async def request_upload(
    body: UploadRequest, session: SessionDep, resources: ResourcesDep, principal: Writer
) -> UploadTicket:
    return await service.create_upload(session, resources, tenant_of(principal), body)


@router.get(
    "/upload-url",
    response_model=UploadTicket,
    summary="Start an upload (query-parameter alias of the POST)",
    description=UPLOAD_HOWTO,
)
async def request_upload_by_query(
    params: Annotated[UploadRequest, Query()],
    session: SessionDep,
    resources: ResourcesDep,
    principal: Writer,
) -> UploadTicket:
    return await service.create_upload(session, resources, tenant_of(principal), params)


@router.get(
    "/download-url", response_model=DownloadTicket, summary="A presigned GET for an available blob"
)
async def request_download(
    blob_id: Annotated[uuid.UUID, Query()],
    session: SessionDep,
    resources: ResourcesDep,
    principal: Reader,
) -> DownloadTicket:
    return await service.issue_download(session, resources, tenant_of(principal), blob_id)


@router.get("", response_model=BlobPage, summary="List the tenant's blobs, newest first")
async def list_blobs(
    session: SessionDep,
    principal: Reader,
    owner_type: OwnerType | None = None,
    owner_id: uuid.UUID | None = None,
    state: BlobState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> BlobPage:
    rows, next_cursor = await service.list_blobs(
        session,
        tenant_of(principal),
        limit=limit,
        cursor=cursor,
        owner_type=owner_type,
        owner_id=owner_id,
        state=state,
    )
    return BlobPage(items=[BlobOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{blob_id}", response_model=BlobOut, summary="Get one blob record")
async def get_blob(blob_id: uuid.UUID, session: SessionDep, principal: Reader) -> BlobOut:
    return BlobOut.model_validate(await service.get_blob(session, tenant_of(principal), blob_id))


@router.post(
    "/{blob_id}/complete",
    response_model=BlobOut,
    summary="Confirm the upload (size, type, checksum); the blob becomes available",
)
async def complete_upload(
    blob_id: uuid.UUID, session: SessionDep, resources: ResourcesDep, principal: Writer
) -> BlobOut:
    blob = await service.complete_upload(session, resources, tenant_of(principal), blob_id)
    return BlobOut.model_validate(blob)


@router.post(
    "/{blob_id}/upload-url",
    response_model=UploadTicket,
    summary="A fresh upload form for a pending blob (the first expired or failed)",
    description=UPLOAD_HOWTO,
)
async def reissue_upload(
    blob_id: uuid.UUID, session: SessionDep, resources: ResourcesDep, principal: Writer
) -> UploadTicket:
    return await service.reissue_upload(session, resources, tenant_of(principal), blob_id)


@router.delete(
    "/{blob_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the blob: its object and its record",
)
async def delete_blob(
    blob_id: uuid.UUID, session: SessionDep, resources: ResourcesDep, principal: Writer
) -> Response:
    await service.delete_blob(session, resources, tenant_of(principal), blob_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
