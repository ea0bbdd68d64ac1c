"""A 2xx means it happened: the request's commit precedes its response (issue 14 item 2).

Through a real uvicorn process, since only a real server sends the response
before a dependency's teardown (httpx's ASGITransport waits for the whole app).
Several clients at once, each on one keep-alive connection, each using what a
2xx just told it:
- register a workstation, then use its key the moment the 201 arrives: never
  refused;
- stop a key (revoke it, deactivate its workstation or disable its customer)
  with the key's use pipelined right behind the request that stops it, so the
  server starts the use as soon as it has answered: never accepted.
OVERWATCH_ROUND_TRIPS="300/100" runs more (fresh keys / stopped keys).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from api.core.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.processes import api_env, raw_request, read_response, running_api

V1 = "/api/v1"
CLIENTS = 6
ADMIN = {"X-API-Key": ADMIN_KEY}


def round_trips() -> tuple[int, int]:
    fresh, _, stopped = os.environ.get("OVERWATCH_ROUND_TRIPS", "60/20").partition("/")
    return int(fresh), int(stopped or fresh)


class Connection:
    """One keep-alive HTTP/1.1 connection to the server under test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, *requests: bytes) -> list[tuple[int, Any]]:
        """Write the requests at once (pipelined), then read their answers in order."""
        self.writer.write(b"".join(requests))
        await self.writer.drain()
        answers = []
        for _ in requests:
            status, _, body = await read_response(self.reader)
            answers.append((status, json.loads(body) if body else None))
        return answers

    def close(self) -> None:
        self.writer.close()


def post(path: str, key: dict[str, str], body: dict[str, Any] | None = None) -> bytes:
    return raw_request("POST", path, key, json.dumps(body).encode() if body is not None else b"")


def me(key: dict[str, str]) -> bytes:
    return raw_request("GET", f"{V1}/auth/me", key)


async def test_keys_work_after_their_201_and_stop_after_their_answer(
    settings: Settings, tmp_path: Path
):
    fresh_total, stopped_total = round_trips()
    outcomes: Counter[str] = Counter()
    async with running_api(api_env(settings), tmp_path, "commit") as api:
        setup = await Connection.open(api.port)
        [(status, created)] = await setup.send(
            post(f"{V1}/auth/customers", ADMIN, {"name": "commit-before-answer"})
        )
        setup.close()
        assert status == 201, created
        customer = {"X-API-Key": created["api_key"]}

        async def register_then_use(conn: Connection, n: int) -> None:
            [(status, ws)] = await conn.send(
                post(f"{V1}/auth/workstations/register", customer, {"name": f"ws {n}"})
            )
            assert status == 201, ws
            [(used, body)] = await conn.send(me({"X-API-Key": ws["api_key"]}))
            assert used in (200, 401), body
            outcomes["fresh key refused" if used == 401 else "fresh key used"] += 1

        async def stop_then_use(conn: Connection, n: int) -> None:
            kind = ("revoke", "deactivate", "disable")[n % 3]
            if kind == "disable":
                [(status, other)] = await conn.send(
                    post(f"{V1}/auth/customers", ADMIN, {"name": f"disabled {n}"})
                )
                victim = {"X-API-Key": other["api_key"]}
                stop = post(f"{V1}/auth/customers/{other['id']}/disable", ADMIN)
            elif kind == "deactivate":
                [(status, ws)] = await conn.send(
                    post(f"{V1}/auth/workstations/register", customer, {"name": f"gone {n}"})
                )
                victim = {"X-API-Key": ws["api_key"]}
                stop = post(f"{V1}/auth/workstations/{ws['id']}/deactivate", customer)
            else:
                [(status, key)] = await conn.send(
                    post(f"{V1}/auth/keys", customer, {"name": f"revoked {n}", "scope": "analyst"})
                )
                victim = {"X-API-Key": key["api_key"]}
                stop = raw_request("DELETE", f"{V1}/auth/keys/{key['id']}", customer)
            assert status == 201
            [(stopped, body), (used, _)] = await conn.send(stop, me(victim))
            assert used in (200, 401)
            if stopped != 200:  # what the 201 just created was not there yet
                assert stopped == 404, (kind, body)
                outcomes["created then not found"] += 1
                return
            outcomes["stopped key accepted" if used == 200 else "stopped key refused"] += 1

        async def worker(index: int) -> None:
            conn = await Connection.open(api.port)
            try:
                for n in range(index, fresh_total, CLIENTS):
                    await register_then_use(conn, n)
                for n in range(index, stopped_total, CLIENTS):
                    await stop_then_use(conn, n)
            finally:
                conn.close()

        await asyncio.gather(*(worker(i) for i in range(CLIENTS)))

    print(f"commit before answer, real server: {dict(sorted(outcomes.items()))}")
    assert outcomes["fresh key used"] + outcomes["fresh key refused"] == fresh_total
    assert outcomes["fresh key refused"] == 0, outcomes
    assert outcomes["created then not found"] == 0, outcomes
    assert outcomes["stopped key accepted"] == 0, outcomes
    assert outcomes["stopped key refused"] == stopped_total
