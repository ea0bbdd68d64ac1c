"""The sync bench's sizes and rows, the raw side's page reader, and a minimal keep-alive
HTTP/1.1 client for pull pages (bench/sync.py explains why not httpx)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import asyncpg
import orjson

BATCH = 500


PUSH_BATCHES = 12


PULL_PAGE = 5000


SCALE = int(os.environ.get("OVERWATCH_BENCH_SCALE", "100000"))


BOOTSTRAP_SIZES = (SCALE // 5, SCALE)


def _node(venue_id: str, i: int) -> dict:
    return {
        "venue_id": venue_id,
        "kind": "Zone",
        "name": f"Zone {i}",
        "description": "seating block",
        "position": {"x": float(i % 100), "y": 1.0, "z": 0.0},
        "properties": {"capacity": i % 500},
    }


class _PageClient:
    """A minimal HTTP/1.1 keep-alive GET client for the pull pages: one
    connection, each response received straight into one buffer allocated
    once (`sock_recv_into`), and the body handed back as a view of it, valid
    until the next `get`. Faster than the server, so the pull figure is the
    server's (see bench/sync.py's docstring): on asyncio streams the body went
    through the stream's buffer and was copied out again, 0.8 ms of a round of
    7,001 entities (18.5 vs 17.7 ms, alternated, one run). It handles only
    what the pull endpoint answers (a Content-Length body, no chunking)."""

    def __init__(self, base: str, headers: dict[str, str], size: int = 2**24) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port or 80)
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._sock: socket.socket | None = None

    async def __aenter__(self) -> _PageClient:
        sock = socket.create_connection((self.host, self.port))
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._sock is not None
        self._sock.close()

    async def _receive(self, have: int) -> int:
        assert self._sock is not None
        if have == len(self._buffer):
            raise RuntimeError("a response larger than the client's buffer")
        got = await asyncio.get_running_loop().sock_recv_into(self._sock, self._view[have:])
        if not got:
            raise ConnectionError("the server closed the connection")
        return have + got

    async def get(self, path: str) -> memoryview:
        assert self._sock is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}\r\n"
        await asyncio.get_running_loop().sock_sendall(self._sock, request.encode())
        have = 0
        while (blank := self._buffer.find(b"\r\n\r\n", 0, have)) < 0:
            have = await self._receive(have)
        head = bytes(self._buffer[:blank]).decode("latin-1").split("\r\n")
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in head[1:] if line)
        }
        end = blank + 4 + int(fields["content-length"])
        while have < end:
            have = await self._receive(have)
        assert have == end, "one request at a time: nothing follows a response"
        body = self._view[blank + 4 : end]
        status = int(head[0].split()[1])
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {bytes(body[:200])!r}")
        return body


# Where a pull page's tail starts: an unescaped quote cannot sit inside a JSON
# string, so the last occurrence is the page's own, after every envelope.
_TAIL = b'],"cursor":'
# The tail holds four numbers and a boolean: far shorter than this.
_TAIL_MAX = 256


async def _pull_pages(client: _PageClient, *, decode: bool = True) -> tuple[int, int, int]:
    """Pull from version 0 to the head; returns (changes, body bytes, last cursor).

    Undecoded, only each page's tail (cursor, has_more) is parsed and the
    changes are not counted (0): the figure is the server's, not the client's
    JSON decoding (compare `_raw_pages(..., decode=False)`)."""
    cursor, count, size = 0, 0, 0
    while True:
        body = await client.get(f"/api/v1/sync/pull?since={cursor}&limit={PULL_PAGE}")
        size += len(body)
        if decode:
            page = orjson.loads(body)
            count += len(page["changes"])
        else:
            tail = bytes(body[-_TAIL_MAX:])
            page = orjson.loads(b"{" + tail[tail.rindex(_TAIL) + 2 :])
        cursor = page["cursor"]
        if not page["has_more"]:
            return count, size, cursor


async def _raw_pages(pg: asyncpg.Connection, customer_id: str, *, decode: bool = True) -> int:
    """The same pages straight from `sync_entities` with asyncpg; decoded, every
    payload is parsed as the API side's client parses the page."""
    raw_cursor, total = 0, 0
    while True:
        records = await pg.fetch(
            "SELECT entity_type, entity_id, version, deleted, payload, merged_into, "
            "updated_by, updated_at FROM sync_entities WHERE customer_id = $1 "
            "AND version > $2 ORDER BY version LIMIT $3",
            uuid.UUID(customer_id),
            raw_cursor,
            PULL_PAGE,
        )
        if not records:
            return total
        total += len(records)
        raw_cursor = records[-1]["version"]
        if decode:
            _ = [orjson.loads(r["payload"]) for r in records]
