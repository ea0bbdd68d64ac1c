"""Customers, API keys, scopes and workstations on the real registry."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Tenant, make_key

AUTH = "/api/v1/auth"


async def test_customer_provisioning_needs_the_admin_key(client, tenant: Tenant):
    for headers in ({}, tenant.headers, {"X-API-Key": "owk_aaaaaaaaaaaa_" + "x" * 43}):
        response = await client.post(f"{AUTH}/customers", json={"name": "x"}, headers=headers)
        assert response.status_code in (401, 403), response.text
        assert "error" in response.json()


async def test_key_is_stored_only_as_a_peppered_hash(client, tenant: Tenant, pg):
    key_id = tenant.key.split("_")[1]
    row = await pg.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    assert row is not None
    stored = " ".join(str(v) for v in row.values())
    assert tenant.key not in stored and tenant.key.split("_", 2)[2] not in stored
    assert len(row["key_hash"]) == 32


async def test_me_reports_tenant_and_scopes(client, tenant: Tenant):
    body = (await client.get(f"{AUTH}/me", headers=tenant.headers)).json()
    assert body["customer_id"] == tenant.id
    assert body["scopes"] == ["customer"]


async def test_disabled_customer_keys_fail_at_once(client, tenant: Tenant, admin_headers):
    ws = (
        await client.post(
            f"{AUTH}/workstations/register", json={"name": "ws-1"}, headers=tenant.headers
        )
    ).json()
    assert (await client.get(f"{AUTH}/me", headers=tenant.headers)).status_code == 200
    disabled = await client.post(f"{AUTH}/customers/{tenant.id}/disable", headers=admin_headers)
    assert disabled.status_code == 200 and disabled.json()["disabled_at"]
    for key in (tenant.key, ws["api_key"]):
        assert (await client.get(f"{AUTH}/me", headers={"X-API-Key": key})).status_code == 401
    await client.post(f"{AUTH}/customers/{tenant.id}/enable", headers=admin_headers)
    assert (await client.get(f"{AUTH}/me", headers=tenant.headers)).status_code == 200


async def test_revoked_and_rotated_keys_fail_immediately(client, tenant: Tenant):
    analyst = await make_key(client, tenant, "analyst")
    analyst_headers = {"X-API-Key": analyst["api_key"]}
    assert (await client.get(f"{AUTH}/me", headers=analyst_headers)).status_code == 200
    rotated = await client.post(f"{AUTH}/keys/{analyst['id']}/rotate", headers=tenant.headers)
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["scopes"] == ["analyst"] and new["api_key"] != analyst["api_key"]
    assert (await client.get(f"{AUTH}/me", headers=analyst_headers)).status_code == 401
    new_headers = {"X-API-Key": new["api_key"]}
    assert (await client.get(f"{AUTH}/me", headers=new_headers)).status_code == 200
    revoked = await client.delete(f"{AUTH}/keys/{new['id']}", headers=tenant.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await client.get(f"{AUTH}/me", headers=new_headers)).status_code == 401


async def test_workstation_registration_and_deactivation(client, tenant: Tenant):
    response = await client.post(
        f"{AUTH}/workstations/register", json={"name": "ws-7"}, headers=tenant.headers
    )
    assert response.status_code == 201
    ws = response.json()
    ws_headers = {"X-API-Key": ws["api_key"]}
    me = (await client.get(f"{AUTH}/me", headers=ws_headers)).json()
    assert me["workstation_id"] == ws["id"] and me["customer_id"] == tenant.id
    listed = (await client.get(f"{AUTH}/workstations", headers=tenant.headers)).json()
    assert [w["id"] for w in listed] == [ws["id"]]
    # A workstation key cannot provision customers, manage keys or register workstations.
    assert (
        await client.post(f"{AUTH}/customers", json={"name": "x"}, headers=ws_headers)
    ).status_code == 403
    assert (
        await client.post(
            f"{AUTH}/keys", json={"name": "x", "scope": "customer"}, headers=ws_headers
        )
    ).status_code == 403
    assert (await client.get(f"{AUTH}/keys", headers=ws_headers)).status_code == 403
    off = await client.post(f"{AUTH}/workstations/{ws['id']}/deactivate", headers=tenant.headers)
    assert off.status_code == 200 and off.json()["deactivated_at"]
    assert (await client.get(f"{AUTH}/me", headers=ws_headers)).status_code == 401


async def test_tenants_never_see_each_others_keys_or_workstations(
    client, tenant: Tenant, other_tenant: Tenant
):
    for t in (tenant, other_tenant):
        await client.post(f"{AUTH}/workstations/register", json={"name": "same"}, headers=t.headers)
        await make_key(client, t, "analyst")
    mine = (await client.get(f"{AUTH}/keys", headers=tenant.headers)).json()
    theirs = (await client.get(f"{AUTH}/keys", headers=other_tenant.headers)).json()
    assert not {k["id"] for k in mine} & {k["id"] for k in theirs}
    their_ws = (await client.get(f"{AUTH}/workstations", headers=other_tenant.headers)).json()
    their_key = theirs[-1]
    # Guessing the other tenant's ids: 404, and nothing changes.
    assert (
        await client.delete(f"{AUTH}/keys/{their_key['id']}", headers=tenant.headers)
    ).status_code == 404
    assert (
        await client.post(f"{AUTH}/keys/{their_key['id']}/rotate", headers=tenant.headers)
    ).status_code == 404
    assert (
        await client.post(
            f"{AUTH}/workstations/{their_ws[0]['id']}/deactivate", headers=tenant.headers
        )
    ).status_code == 404
    after = (await client.get(f"{AUTH}/keys", headers=other_tenant.headers)).json()
    assert all(k["revoked_at"] is None for k in after)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "scope": "analyst"},
        {"name": "x" * 201, "scope": "analyst"},
        {"name": "x", "scope": "admin"},
        {"name": "x", "scope": "workstation"},
        {"name": "x", "scope": "analyst", "device_serial": "D-1"},
        {"name": "x", "scope": "analyst", "unexpected": 1},
        {"name": "x", "scope": "analyst", "expires_at": "2001-01-01T00:00:00Z"},
        {"name": 12, "scope": "analyst"},
    ],
)
async def test_bad_key_requests_get_field_errors_and_write_nothing(client, tenant, pg, body):
    before = await pg.fetchval(
        "SELECT count(*) FROM api_keys WHERE customer_id = $1::uuid", tenant.id
    )
    response = await client.post(f"{AUTH}/keys", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["details"]
    after = await pg.fetchval(
        "SELECT count(*) FROM api_keys WHERE customer_id = $1::uuid", tenant.id
    )
    assert after == before


async def test_malformed_keys_are_refused_without_errors(client: httpx.AsyncClient):
    for junk in (
        "",
        "owk_",
        "owk_short_x",
        "owk_" + "a" * 12 + "_" + "b" * 40,
        "x" * 5000,
        "owk_AAAAAAAAAAAA_" + "c" * 43,
        "' OR 1=1 --",
    ):
        response = await client.get(f"{AUTH}/me", headers={"X-API-Key": junk})
        assert response.status_code == 401


async def test_last_used_is_flushed_in_batches_not_per_request(app, client, tenant, pg):
    from api.auth.service import flush_key_usage

    key_id = tenant.key.split("_")[1]
    await client.get(f"{AUTH}/me", headers=tenant.headers)
    assert await pg.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1", key_id) is None
    flushed = await flush_key_usage(app.state.resources)
    assert flushed >= 1
    assert (
        await pg.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1", key_id) is not None
    )
