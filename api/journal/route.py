"""The route class of every `/api/v1` endpoint (api/router.py checks each uses it)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response

from api.core.json_body import OrjsonRoute
from api.journal.storable import refuse_unstorable_parameters


class V1Route(OrjsonRoute):
    """A JSON body parsed by orjson (`OrjsonRoute`), and query and path
    parameters refused with 422 if Postgres could not hold them (NUL, a lone
    surrogate), before any dependency or the endpoint runs.

    The check was a router dependency; FastAPI solves each dependency with
    generic machinery (signature, cache, sub-dependencies) on every request,
    which cost more than the check itself on the per-request floor (issue 15).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            refuse_unstorable_parameters(request)
            return await handler(request)

        return handle
