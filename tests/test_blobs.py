"""Blobs through the real S3-compatible server, used over HTTP exactly as a client would.

The API runs in-process (ASGI), but every presigned URL it returns is used
with a plain HTTP client against the store itself (SeaweedFS on the local
stack, MinIO under testcontainers), so the signatures, forms and keys are real,
and so are the store's refusals: a real store enforces the signed POST policy
(key, content type, exact size) and refuses anonymous requests. The service's
own checks in `complete` are the second line; their tests put objects with our
own credentials to get past the first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from api.core.blobstore import COPY_READ_TIMEOUT_SECONDS, copy_client
from api.core.resources import create_s3_client
from api.core.settings import Settings
from tests.conftest import Tenant

BLOBS = "/api/v1/blobs"


@pytest.fixture
async def store() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for presigned URLs: no API key, no app, just the store."""
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


@pytest.fixture
def s3(settings: Settings) -> Any:
    """Our own boto3 client, to look at the bucket behind the API's back."""
    return create_s3_client(settings)


async def synced_entity(
    client, tenant: Tenant, entity_type: str = "venue", *, deleted: bool = False
) -> str:
    """An entity of the tenant created (and, with `deleted`, deleted) through the API,
    so the owner checks see what the write path really leaves behind."""
    h = tenant.headers
    venue = await client.post("/api/v1/venues", json={"name": "Owner venue"}, headers=h)
    assert venue.status_code == 201, venue.text
    venue_id = venue.json()["id"]
    if entity_type == "venue":
        entity_id = venue_id
        path = f"/api/v1/venues/{venue_id}"
    elif entity_type == "world_node":
        r = await client.post(
            "/api/v1/world-model/nodes",
            headers=h,
            json={"venue_id": venue_id, "kind": "Zone", "name": "Atrium"},
        )
        assert r.status_code == 201, r.text
        entity_id = r.json()["id"]
        path = f"/api/v1/world-model/nodes/{entity_id}"
    else:
        r = await client.post(
            "/api/v1/operations", headers=h, json={"venue_id": venue_id, "status": "planned"}
        )
        assert r.status_code == 201, r.text
        entity_id = r.json()["id"]
        path = ""
    if deleted:
        assert path, "only venues and world nodes are deleted here"
        assert (await client.delete(path, headers=h)).status_code == 200
    return str(entity_id)


async def ask_upload(client, tenant: Tenant, data: bytes, **extra: Any) -> dict[str, Any]:
    body = {"content_type": "image/png", "size": len(data), **extra}
    response = await client.post(f"{BLOBS}/upload-url", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def post_form(
    store: httpx.AsyncClient, ticket: dict[str, Any], data: bytes, **field_overrides: str
) -> httpx.Response:
    """Upload with the presigned POST: every returned field, then the file (last)."""
    upload = ticket["upload"]
    fields = {**upload["fields"], **field_overrides}
    content_type = fields.get("Content-Type", "application/octet-stream")
    return await store.post(
        upload["url"], data=fields, files={upload["file_field"]: ("upload.bin", data, content_type)}
    )


def refusal(response: httpx.Response) -> str:
    """The S3 error code of a refused request (its XML body's `<Code>`)."""
    found = re.search(r"<Code>([^<]+)</Code>", response.text)
    return found.group(1) if found else ""


def staged_key(ticket: dict[str, Any]) -> str:
    """The key the upload form writes: never the blob's final `object_key`."""
    return str(ticket["upload"]["fields"]["key"])


def object_exists(s3: Any, settings: Settings, key: str) -> bool:
    try:
        s3.head_object(Bucket=settings.blob_bucket, Key=key)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")
        return False
    return True


async def blob_count(pg) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM blobs"))


def png_bytes(n: int = 2048) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(n)


async def test_round_trip_upload_complete_download(client, tenant: Tenant, store, s3, settings, pg):
    data = png_bytes()
    venue = await synced_entity(client, tenant, "venue")
    ticket = await ask_upload(
        client,
        tenant,
        data,
        sha256=hashlib.sha256(data).hexdigest(),
        owner_type="venue",
        owner_id=venue,
    )
    blob_id = ticket["blob_id"]
    assert ticket["object_key"] == f"customers/{tenant.id}/blobs/{blob_id}"
    assert ticket["blob"]["state"] == "pending" and ticket["expires_in"] == 900
    # The form writes a staging key; `complete` copies it to the final key.
    assert staged_key(ticket) == f"staging/customers/{tenant.id}/blobs/{blob_id}"

    # Not downloadable before the upload is confirmed.
    early = await client.get(
        f"{BLOBS}/download-url", params={"blob_id": blob_id}, headers=tenant.headers
    )
    assert early.status_code == 409 and early.json()["error"]["code"] == "blob_not_available"

    uploaded = await post_form(store, ticket, data)
    assert uploaded.status_code == 204, uploaded.text
    done = await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)
    assert done.status_code == 200, done.text
    assert object_exists(s3, settings, ticket["object_key"])
    assert not object_exists(s3, settings, staged_key(ticket))
    assert done.json()["state"] == "available" and done.json()["actual_size"] == len(data)
    # Completing again changes nothing.
    again = await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)
    assert again.status_code == 200 and again.json()["completed_at"] == done.json()["completed_at"]

    ticket_get = await client.get(
        f"{BLOBS}/download-url", params={"blob_id": blob_id}, headers=tenant.headers
    )
    assert ticket_get.status_code == 200, ticket_get.text
    downloaded = await store.get(ticket_get.json()["url"])
    assert downloaded.status_code == 200
    assert downloaded.content == data
    assert downloaded.headers["content-type"] == "image/png"

    row = await pg.fetchrow("SELECT * FROM blobs WHERE id = $1", uuid.UUID(blob_id))
    assert row["state"] == "available" and row["owner_id"] == uuid.UUID(venue)
    assert row["sha256"] == hashlib.sha256(data).hexdigest()


async def test_get_alias_issues_the_same_ticket(client, tenant: Tenant, store):
    data = b'{"perches": 3}'
    response = await client.get(
        f"{BLOBS}/upload-url",
        headers=tenant.headers,
        params={"content_type": "application/json", "size": len(data)},
    )
    assert response.status_code == 200, response.text
    ticket = response.json()
    assert (await post_form(store, ticket, data)).status_code < 300
    done = await client.post(f"{BLOBS}/{ticket['blob_id']}/complete", headers=tenant.headers)
    assert done.status_code == 200 and done.json()["content_type"] == "application/json"
    unknown = await client.get(
        f"{BLOBS}/upload-url",
        headers=tenant.headers,
        params={"content_type": "image/png", "size": 3, "colour": "red"},
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    ("sent_extra", "code"),
    [(+3, "EntityTooLarge"), (-3, "EntityTooSmall")],
    ids=["larger", "smaller"],
)
async def test_store_refuses_an_upload_of_another_size_than_declared(
    client, tenant: Tenant, store, s3, settings, sent_extra: int, code: str
):
    """The policy's content-length-range is the declared size exactly: the
    store itself answers 400 and stores nothing."""
    declared = png_bytes(1000)
    ticket = await ask_upload(client, tenant, declared)
    blob_id = ticket["blob_id"]
    uploaded = await post_form(store, ticket, png_bytes(1000 + sent_extra))
    assert uploaded.status_code == 400, uploaded.text
    assert refusal(uploaded) == code
    assert not object_exists(s3, settings, staged_key(ticket))
    completion = await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)
    assert completion.status_code == 409
    assert completion.json()["error"]["code"] == "blob_not_uploaded"
    record = (await client.get(f"{BLOBS}/{blob_id}", headers=tenant.headers)).json()
    assert record["state"] == "pending"
    download = await client.get(
        f"{BLOBS}/download-url", params={"blob_id": blob_id}, headers=tenant.headers
    )
    assert download.status_code == 409
    # The form still works for the declared bytes.
    assert (await post_form(store, ticket, declared)).status_code == 204
    done = await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)
    assert done.status_code == 200 and done.json()["actual_size"] == len(declared)


@pytest.mark.parametrize(
    ("put", "code", "details"),
    [
        (
            {"Body": b"x" * 1003, "ContentType": "image/png"},
            "size_mismatch",
            {"declared_size": 1000, "actual_size": 1003},
        ),
        (
            {"Body": b"x" * 1000, "ContentType": "text/html"},
            "content_type_mismatch",
            {"declared": "image/png", "actual": "text/html"},
        ),
    ],
    ids=["size", "content type"],
)
async def test_complete_rejects_and_deletes_what_the_policy_would_not_have_let_in(
    client, tenant: Tenant, s3, settings, put: dict[str, Any], code: str, details: dict[str, Any]
):
    """The second line: bytes staged past the form (here with our own
    credentials; in production a store that enforced less) never become
    available. `complete` answers 422 and deletes them."""
    ticket = await ask_upload(client, tenant, b"x" * 1000)
    blob_id = ticket["blob_id"]
    s3.put_object(Bucket=settings.blob_bucket, Key=staged_key(ticket), **put)
    completion = await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)
    assert completion.status_code == 422, completion.text
    assert completion.json()["error"]["code"] == code
    assert completion.json()["error"]["details"] == details
    for key in (ticket["object_key"], staged_key(ticket)):
        assert not object_exists(s3, settings, key)
    record = (await client.get(f"{BLOBS}/{blob_id}", headers=tenant.headers)).json()
    assert record["state"] == "pending"
    download = await client.get(
        f"{BLOBS}/download-url", params={"blob_id": blob_id}, headers=tenant.headers
    )
    assert download.status_code == 409


async def test_wrong_checksum_is_deleted_and_a_fresh_form_allows_a_retry(
    client, tenant: Tenant, store, s3, settings
):
    data = png_bytes()
    corrupted = bytes([data[0] ^ 0xFF]) + data[1:]  # same size, other content
    ticket = await ask_upload(client, tenant, data, sha256=hashlib.sha256(data).hexdigest())
    blob_id = ticket["blob_id"]
    assert (await post_form(store, ticket, corrupted)).status_code < 300
    rejected = await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)
    assert rejected.status_code == 422, rejected.text
    assert rejected.json()["error"]["code"] == "checksum_mismatch"
    assert not object_exists(s3, settings, ticket["object_key"])

    fresh = await client.post(f"{BLOBS}/{blob_id}/upload-url", headers=tenant.headers)
    assert fresh.status_code == 200 and fresh.json()["object_key"] == ticket["object_key"]
    assert (await post_form(store, fresh.json(), data)).status_code < 300
    done = await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)
    assert done.status_code == 200 and done.json()["state"] == "available"
    # A complete blob gets no new upload form.
    late = await client.post(f"{BLOBS}/{blob_id}/upload-url", headers=tenant.headers)
    assert late.status_code == 409


async def test_store_refuses_a_form_with_another_content_type(
    client, tenant: Tenant, store, s3, settings
):
    data = png_bytes()
    ticket = await ask_upload(client, tenant, data)
    uploaded = await post_form(store, ticket, data, **{"Content-Type": "text/html"})
    assert uploaded.status_code == 403, uploaded.text
    assert not object_exists(s3, settings, staged_key(ticket))
    completion = await client.post(f"{BLOBS}/{ticket['blob_id']}/complete", headers=tenant.headers)
    assert completion.status_code == 409


def _tamper_policy(fields: dict[str, str]) -> dict[str, str]:
    """The signed policy with a wider size range, the signature left as it was."""
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [
        ["content-length-range", 1, 2**30]
        if isinstance(c, list) and c[0] == "content-length-range"
        else c
        for c in policy["conditions"]
    ]
    return {"policy": base64.b64encode(json.dumps(policy).encode()).decode()}


def _tamper_signature(fields: dict[str, str]) -> dict[str, str]:
    signature = fields["x-amz-signature"]
    return {"x-amz-signature": ("0" if signature[0] != "0" else "1") + signature[1:]}


@pytest.mark.parametrize("tamper", [_tamper_policy, _tamper_signature], ids=["policy", "signature"])
async def test_store_refuses_a_tampered_policy_or_signature(
    client, tenant: Tenant, store, s3, settings, tamper: Callable[[dict[str, str]], dict[str, str]]
):
    data = png_bytes()
    ticket = await ask_upload(client, tenant, data)
    forged = await post_form(store, ticket, data + b"more", **tamper(ticket["upload"]["fields"]))
    assert forged.status_code == 403, forged.text
    assert not object_exists(s3, settings, staged_key(ticket))


async def test_store_refuses_anonymous_requests(client, tenant: Tenant, store, settings):
    data = png_bytes()
    ticket = await ask_upload(client, tenant, data)
    assert (await post_form(store, ticket, data)).status_code == 204
    bucket_url = f"{settings.blob_endpoint_url}/{settings.blob_bucket}"
    for url, params in (
        (bucket_url, {}),  # ListObjects
        (bucket_url, {"list-type": "2"}),  # ListObjectsV2
        (settings.blob_endpoint_url, {}),  # ListBuckets
    ):
        listing = await store.get(url, params=params)
        assert listing.status_code == 403, (url, listing.status_code, listing.text)
        assert refusal(listing) == "AccessDenied"
        assert ticket["blob_id"] not in listing.text and "<Contents>" not in listing.text
    unsigned = await store.get(f"{bucket_url}/{staged_key(ticket)}")  # no signature
    assert unsigned.status_code == 403 and data not in unsigned.content


async def test_complete_before_upload_answers_409_and_stays_pending(client, tenant: Tenant):
    ticket = await ask_upload(client, tenant, png_bytes())
    response = await client.post(f"{BLOBS}/{ticket['blob_id']}/complete", headers=tenant.headers)
    assert response.status_code == 409 and response.json()["error"]["code"] == "blob_not_uploaded"
    assert (await client.get(f"{BLOBS}/{ticket['blob_id']}", headers=tenant.headers)).json()[
        "state"
    ] == "pending"


async def test_store_refuses_a_form_whose_key_was_changed(
    client, tenant: Tenant, other_tenant: Tenant, store, s3, settings
):
    victim = await ask_upload(client, other_tenant, png_bytes(400))
    attacker = await ask_upload(client, tenant, png_bytes(400))
    mine = attacker["object_key"]
    for key in (
        victim["object_key"],  # another tenant's blob
        staged_key(victim),  # another tenant's staging key
        mine,  # the attacker's own final key, skipping `complete`'s checks
        f"customers/{tenant.id}/blobs/{uuid.uuid4()}",  # a key no record knows
    ):
        forged = await post_form(store, attacker, png_bytes(400), key=key)
        assert forged.status_code == 403, (key, forged.text)
        assert not object_exists(s3, settings, key)
    # Nothing reached either blob, and the other tenant's stays out of reach.
    assert (
        await client.post(f"{BLOBS}/{attacker['blob_id']}/complete", headers=tenant.headers)
    ).status_code == 409
    for method, url, params in (
        ("GET", f"{BLOBS}/{victim['blob_id']}", None),
        ("GET", f"{BLOBS}/download-url", {"blob_id": victim["blob_id"]}),
        ("POST", f"{BLOBS}/{victim['blob_id']}/complete", None),
    ):
        response = await client.request(method, url, params=params, headers=tenant.headers)
        assert response.status_code == 404, (method, url, response.text)
    theirs = await client.post(
        f"{BLOBS}/{victim['blob_id']}/complete", headers=other_tenant.headers
    )
    assert theirs.status_code == 409
    for t, ticket in ((tenant, attacker), (other_tenant, victim)):
        record = (await client.get(f"{BLOBS}/{ticket['blob_id']}", headers=t.headers)).json()
        assert record["state"] == "pending"


async def test_tenants_never_see_each_others_blobs(
    client, tenant: Tenant, other_tenant: Tenant, store
):
    data = png_bytes()
    ticket = await ask_upload(client, other_tenant, data)
    blob_id = ticket["blob_id"]
    await post_form(store, ticket, data)
    assert (
        await client.post(f"{BLOBS}/{blob_id}/complete", headers=other_tenant.headers)
    ).status_code == 200
    mine = await ask_upload(client, tenant, data)

    for method, url, params in (
        ("GET", f"{BLOBS}/{blob_id}", None),
        ("GET", f"{BLOBS}/download-url", {"blob_id": blob_id}),
        ("POST", f"{BLOBS}/{blob_id}/complete", None),
        ("POST", f"{BLOBS}/{blob_id}/upload-url", None),
        ("DELETE", f"{BLOBS}/{blob_id}", None),
    ):
        response = await client.request(method, url, params=params, headers=tenant.headers)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["error"]["code"] == "not_found"
    listed = (await client.get(BLOBS, headers=tenant.headers)).json()
    assert [b["id"] for b in listed["items"]] == [mine["blob_id"]]
    # The owner still has it, untouched, and can download it.
    download = await client.get(
        f"{BLOBS}/download-url", params={"blob_id": blob_id}, headers=other_tenant.headers
    )
    assert download.status_code == 200
    assert (await store.get(download.json()["url"])).content == data


async def test_delete_removes_object_and_record(client, tenant: Tenant, store, s3, settings, pg):
    data = png_bytes()
    ticket = await ask_upload(client, tenant, data)
    await post_form(store, ticket, data)
    await client.post(f"{BLOBS}/{ticket['blob_id']}/complete", headers=tenant.headers)
    url = (
        await client.get(
            f"{BLOBS}/download-url", params={"blob_id": ticket["blob_id"]}, headers=tenant.headers
        )
    ).json()["url"]
    before = await blob_count(pg)
    response = await client.delete(f"{BLOBS}/{ticket['blob_id']}", headers=tenant.headers)
    assert response.status_code == 204
    assert await blob_count(pg) == before - 1
    assert not object_exists(s3, settings, ticket["object_key"])
    assert (await store.get(url)).status_code == 404  # earlier download links die too
    gone = await client.get(f"{BLOBS}/{ticket['blob_id']}", headers=tenant.headers)
    assert gone.status_code == 404
    assert (
        await client.delete(f"{BLOBS}/{ticket['blob_id']}", headers=tenant.headers)
    ).status_code == 404


async def test_list_filters_by_owner_and_paginates(client, tenant: Tenant, pg):
    venue = await synced_entity(client, tenant, "venue")
    node = await synced_entity(client, tenant, "world_node")
    owned = [
        (await ask_upload(client, tenant, b"x" * 10, owner_type="venue", owner_id=venue))["blob_id"]
        for _ in range(3)
    ]
    others = [
        (await ask_upload(client, tenant, b"y" * 10, owner_type="world_node", owner_id=node))[
            "blob_id"
        ]
        for _ in range(2)
    ]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(BLOBS, params=params, headers=tenant.headers)).json()
        seen += [b["id"] for b in page["items"]]
        assert len(page["items"]) <= 2
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(owned + others))  # newest first, each once

    by_venue = (await client.get(BLOBS, params={"owner_id": venue}, headers=tenant.headers)).json()
    assert {b["id"] for b in by_venue["items"]} == set(owned)
    by_type = (
        await client.get(BLOBS, params={"owner_type": "world_node"}, headers=tenant.headers)
    ).json()
    assert {b["id"] for b in by_type["items"]} == set(others)
    pending = (
        await client.get(BLOBS, params={"state": "available"}, headers=tenant.headers)
    ).json()
    assert pending["items"] == []
    bad = await client.get(BLOBS, params={"cursor": "not-a-cursor"}, headers=tenant.headers)
    assert bad.status_code == 422 and bad.json()["error"]["message"] == "malformed cursor"


async def test_sync_envelopes_list_available_blobs_of_the_tenant(
    client, tenant: Tenant, other_tenant: Tenant, store
):
    venue = await synced_entity(client, tenant, "venue")
    operation = await synced_entity(client, tenant, "operation")
    their_venue = await synced_entity(client, other_tenant, "venue")
    complete: list[str] = []
    for _ in range(2):
        data = png_bytes()
        ticket = await ask_upload(client, tenant, data, owner_type="venue", owner_id=venue)
        await post_form(store, ticket, data)
        assert (
            await client.post(f"{BLOBS}/{ticket['blob_id']}/complete", headers=tenant.headers)
        ).status_code == 200
        complete.append(ticket["blob_id"])
    await ask_upload(client, tenant, b"z" * 5, owner_type="venue", owner_id=venue)  # pending
    data = png_bytes()
    theirs = await ask_upload(client, other_tenant, data, owner_type="venue", owner_id=their_venue)
    await post_form(store, theirs, data)
    await client.post(f"{BLOBS}/{theirs['blob_id']}/complete", headers=other_tenant.headers)

    pulled = (await client.get("/api/v1/sync/pull?since=0", headers=tenant.headers)).json()
    blob_ids = {c["id"]: c.get("blob_ids") for c in pulled["changes"]}
    # Available blobs only, oldest first; the operation owns none; the other
    # tenant's venue and blob never appear.
    assert blob_ids[venue] == complete
    assert blob_ids[operation] == []
    assert their_venue not in blob_ids
    boot = (await client.get("/api/v1/sync/bootstrap", headers=tenant.headers)).text
    lines = [json.loads(line) for line in boot.splitlines()[1:-1]]
    assert {e["id"]: e["blob_ids"] for e in lines if e["type"] == "venue"}[venue] == complete
    assert theirs["blob_id"] not in boot


async def test_blobs_of_a_merged_venue_show_on_the_survivor(client, tenant: Tenant, store):
    """A merge re-points blobs: the survivor's envelope must list them, though
    no blob of the survivor itself was ever completed."""
    survivor = await synced_entity(client, tenant, "venue")
    merged = await synced_entity(client, tenant, "venue")
    data = png_bytes()
    ticket = await ask_upload(client, tenant, data, owner_type="venue", owner_id=merged)
    await post_form(store, ticket, data)
    done = await client.post(f"{BLOBS}/{ticket['blob_id']}/complete", headers=tenant.headers)
    assert done.status_code == 200, done.text
    before = (await client.get("/api/v1/sync/pull?since=0", headers=tenant.headers)).json()
    assert {c["id"]: c["blob_ids"] for c in before["changes"]}[survivor] == []
    r = await client.post(
        f"/api/v1/venues/{survivor}/merge", headers=tenant.headers, json={"merge_ids": [merged]}
    )
    assert r.status_code == 200, r.text
    pulled = (await client.get("/api/v1/sync/pull?since=0", headers=tenant.headers)).json()
    envelopes = {c["id"]: c for c in pulled["changes"]}
    assert envelopes[survivor]["blob_ids"] == [ticket["blob_id"]]
    assert envelopes[merged]["op"] == "delete" and "blob_ids" not in envelopes[merged]


async def test_read_only_keys_read_but_never_write(client, tenant: Tenant, store):
    data = png_bytes()
    ticket = await ask_upload(client, tenant, data)
    await post_form(store, ticket, data)
    await client.post(f"{BLOBS}/{ticket['blob_id']}/complete", headers=tenant.headers)
    analyst = await client.post(
        "/api/v1/auth/keys", headers=tenant.headers, json={"name": "ro", "scope": "analyst"}
    )
    headers = {"X-API-Key": analyst.json()["api_key"]}
    assert (await client.get(BLOBS, headers=headers)).status_code == 200
    assert (await client.get(f"{BLOBS}/{ticket['blob_id']}", headers=headers)).status_code == 200
    download = await client.get(
        f"{BLOBS}/download-url", params={"blob_id": ticket["blob_id"]}, headers=headers
    )
    assert download.status_code == 200
    for method, url, kwargs in (
        ("POST", f"{BLOBS}/upload-url", {"json": {"content_type": "image/png", "size": 1}}),
        ("GET", f"{BLOBS}/upload-url", {"params": {"content_type": "image/png", "size": 1}}),
        ("POST", f"{BLOBS}/{ticket['blob_id']}/complete", {}),
        ("POST", f"{BLOBS}/{ticket['blob_id']}/upload-url", {}),
        ("DELETE", f"{BLOBS}/{ticket['blob_id']}", {}),
    ):
        response = await client.request(method, url, headers=headers, **kwargs)
        assert response.status_code == 403, (method, url, response.text)
    assert (await client.get(BLOBS, headers={})).status_code == 401
    assert (await client.get(f"{BLOBS}/{ticket['blob_id']}", headers=tenant.headers)).json()[
        "state"
    ] == "available"


async def test_per_type_size_caps(client, tenant: Tenant):
    point_cloud = await client.post(
        f"{BLOBS}/upload-url",
        headers=tenant.headers,
        json={"content_type": "application/vnd.las", "size": 3 * 2**29},
    )  # 1.5 GiB
    assert point_cloud.status_code == 201, point_cloud.text
    fields = point_cloud.json()["upload"]["fields"]
    assert fields["Content-Type"] == "application/vnd.las" and "policy" in fields
    image = await client.post(
        f"{BLOBS}/upload-url",
        headers=tenant.headers,
        json={"content_type": "image/png", "size": 3 * 2**29},
    )
    assert image.status_code == 422
    assert image.json()["error"]["code"] == "blob_too_large"
    assert image.json()["error"]["details"]["max_size"] == 50 * 2**20


SHA = "a" * 64

# Each case builds a body from the owners available to the test.
BAD_BODIES: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
    "negative size": lambda o: {"content_type": "image/png", "size": -1},
    "zero size": lambda o: {"content_type": "image/png", "size": 0},
    "huge size": lambda o: {"content_type": "application/octet-stream", "size": 10**15},
    "over the type's cap": lambda o: {"content_type": "image/jpeg", "size": 2**30},
    "size as text": lambda o: {"content_type": "image/png", "size": "ten"},
    "missing size": lambda o: {"content_type": "image/png"},
    "unknown content type": lambda o: {"content_type": "text/html", "size": 10},
    "not a content type": lambda o: {"content_type": "png", "size": 10},
    "short checksum": lambda o: {"content_type": "image/png", "size": 10, "sha256": SHA[:63]},
    "non-hex checksum": lambda o: {"content_type": "image/png", "size": 10, "sha256": "g" * 64},
    "unknown field": lambda o: {"content_type": "image/png", "size": 10, "name": "x.png"},
    "unknown owner": lambda o: {
        "content_type": "image/png",
        "size": 10,
        "owner_type": "venue",
        "owner_id": str(uuid.uuid4()),
    },
    "other tenant's owner": lambda o: {
        "content_type": "image/png",
        "size": 10,
        "owner_type": "venue",
        "owner_id": o["theirs"],
    },
    "deleted owner": lambda o: {
        "content_type": "image/png",
        "size": 10,
        "owner_type": "venue",
        "owner_id": o["deleted"],
    },
    "owner of another type": lambda o: {
        "content_type": "image/png",
        "size": 10,
        "owner_type": "operation",
        "owner_id": o["venue"],
    },
    "owner type not allowed": lambda o: {
        "content_type": "image/png",
        "size": 10,
        "owner_type": "kit",
        "owner_id": o["venue"],
    },
    "owner id without type": lambda o: {
        "content_type": "image/png",
        "size": 10,
        "owner_id": o["venue"],
    },
    "malformed owner id": lambda o: {
        "content_type": "image/png",
        "size": 10,
        "owner_type": "venue",
        "owner_id": "venue-1",
    },
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_input_is_refused_and_writes_nothing(
    client, tenant: Tenant, other_tenant: Tenant, pg, case: str
):
    owners = {
        "venue": await synced_entity(client, tenant, "venue"),
        "deleted": await synced_entity(client, tenant, "venue", deleted=True),
        "theirs": await synced_entity(client, other_tenant, "venue"),
    }
    body = BAD_BODIES[case](owners)
    before = await blob_count(pg)
    response = await client.post(f"{BLOBS}/upload-url", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    # The GET alias refuses the same input the same way.
    alias = await client.get(f"{BLOBS}/upload-url", params=body, headers=tenant.headers)
    assert alias.status_code == 422, alias.text
    assert await blob_count(pg) == before


@pytest.mark.parametrize(
    "path",
    [
        "/download-url?blob_id=nope",
        "/not-a-uuid",
        f"/download-url?blob_id={uuid.uuid4()}",
        f"/{uuid.uuid4()}",
    ],
)
async def test_unknown_or_malformed_ids(client, tenant: Tenant, path: str):
    response = await client.get(BLOBS + path, headers=tenant.headers)
    assert response.status_code in (404, 422)
    assert "error" in response.json()


def test_blob_content_types_setting_is_read_from_json(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "development")  # accept the default secrets
    monkeypatch.setenv("BLOB_CONTENT_TYPES", '{"Image/PNG": 1024, "application/vnd.las": 2048}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.blob_content_types == {"image/png": 1024, "application/vnd.las": 2048}
    for bad in ('{"png": 10}', '{"image/png": 0}', '{"image/png": 6442450944}', "{}"):
        monkeypatch.setenv("BLOB_CONTENT_TYPES", bad)
        with pytest.raises(ValidationError):
            Settings(_env_file=None)  # type: ignore[call-arg]


async def test_a_used_form_cannot_replace_verified_bytes(
    client, tenant: Tenant, store, s3, settings
):
    """Issue 14 item 4: the form stays valid until it expires, but after `complete`
    it must no longer reach the bytes that downloads serve."""
    data = png_bytes()
    ticket = await ask_upload(client, tenant, data, sha256=hashlib.sha256(data).hexdigest())
    blob_id = ticket["blob_id"]
    assert (await post_form(store, ticket, data)).status_code == 204
    done = await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)
    assert done.status_code == 200, done.text

    replacement = png_bytes()  # same size and type: within the signed policy
    assert len(replacement) == len(data) and replacement != data
    again = await post_form(store, ticket, replacement)
    assert again.status_code == 204, again.text  # the store still honours the form ...
    assert (await client.post(f"{BLOBS}/{blob_id}/complete", headers=tenant.headers)).json()[
        "completed_at"
    ] == done.json()["completed_at"]
    download = await client.get(
        f"{BLOBS}/download-url", params={"blob_id": blob_id}, headers=tenant.headers
    )
    assert download.status_code == 200, download.text
    served = await store.get(download.json()["url"])
    assert served.status_code == 200
    assert served.content == data  # ... but the verified bytes are out of its reach

    # Deleting the blob removes the verified object and the stray staging one.
    assert object_exists(s3, settings, staged_key(ticket))
    assert (await client.delete(f"{BLOBS}/{blob_id}", headers=tenant.headers)).status_code == 204
    for key in (ticket["object_key"], staged_key(ticket)):
        assert not object_exists(s3, settings, key)


async def test_an_upload_made_before_staging_keys_still_completes(
    client, tenant: Tenant, store, s3, settings
):
    """Forms signed before staging keys existed wrote the final key itself:
    `complete` finds nothing staged and checks the final object."""
    data = png_bytes()
    ticket = await ask_upload(client, tenant, data, sha256=hashlib.sha256(data).hexdigest())
    s3.put_object(
        Bucket=settings.blob_bucket, Key=ticket["object_key"], Body=data, ContentType="image/png"
    )
    done = await client.post(f"{BLOBS}/{ticket['blob_id']}/complete", headers=tenant.headers)
    assert done.status_code == 200, done.text
    download = await client.get(
        f"{BLOBS}/download-url", params={"blob_id": ticket["blob_id"]}, headers=tenant.headers
    )
    assert (await store.get(download.json()["url"])).content == data


def test_the_copy_on_complete_may_wait_for_a_large_object(app):
    """A server-side copy answers only when it is done: about 40 s for 2 GiB on
    the local SeaweedFS, far beyond the read timeout of the API's other calls."""
    resources = app.state.resources
    copier = copy_client(resources)
    assert copier is copy_client(resources)  # one per process
    assert copier.meta.config.read_timeout == COPY_READ_TIMEOUT_SECONDS >= 600
    assert resources.s3.meta.config.read_timeout < COPY_READ_TIMEOUT_SECONDS
    assert copier.meta.endpoint_url == resources.s3.meta.endpoint_url
