"""Request bodies parsed with orjson instead of the standard library's json.

FastAPI parses a JSON body with `json.loads` before validating it; for the
write endpoints that take batches (hundreds of entities a call) that parse is
a visible share of the request. `OrjsonRoute` has the request's `json()`,
which FastAPI calls, parse with orjson. Any body orjson refuses (invalid
JSON, NaN or Infinity literals, lone surrogate escapes, a byte order mark,
UTF-16) or might read differently (integers beyond 64 bits) goes to
`json.loads` as before, so what is accepted and
every error answer stay exactly as they were; only the speed of the common
case changes. `parse_json` does the same for endpoints that read their body
themselves (sync push).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.core.collector import LARGE_BODY_BYTES, fewer_collections

# orjson reads an integer outside [-2**63, 2**64) as a float, where `json.loads`
# keeps the integer (which api/journal/storable.py then refuses). Such an integer
# has at least 19 digits (-2**63 - 1 has 19): a body with a run of 19 digits
# anywhere goes to json.loads. The run is found by mapping every digit to "0"
# and everything else to a space, then a plain `find`: both in C, ten times
# faster than a regular expression over a 150 KB batch body.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def has_long_digit_run(body: bytes | bytearray) -> bool:
    """Whether `body` holds 19 or more consecutive ASCII digits."""
    return body.translate(_DIGITS_AS_ZEROS).find(_LONG_RUN) >= 0


def parse_json(body: bytes | bytearray) -> Any:
    """`json.loads(body)`, through orjson when it gives the same answer (see above)."""
    if not has_long_digit_run(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


class OrjsonRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by `parse_json`.

    FastAPI reads and parses the body itself, inside its own error handling
    (body too large, not JSON): the request's `json()` is replaced, not called
    early, so those answers stay FastAPI's.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            async def fast_json() -> Any:
                if not hasattr(request, "_json"):
                    request._json = parse_json(await request.body())
                return request._json

            request.json = fast_json  # type: ignore[method-assign]
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) >= LARGE_BODY_BYTES:
                with fewer_collections():
                    return await handler(request)
            return await handler(request)

        return handle
