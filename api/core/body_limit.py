"""A cap on every request body, counted on the stream before anything parses it.

REQUEST_MAX_BODY_BYTES applies to every HTTP endpoint; the sync push has its
own, larger SYNC_MAX_BODY_BYTES (it carries up to SYNC_MAX_MUTATIONS
mutations). A declared `Content-Length` above the cap is answered 413 without
reading a byte; a body without one (chunked) is counted as it arrives and
answered 413 as soon as it passes the cap. Nothing is buffered here, and a
refused request changes nothing: the endpoint never sees a complete body.
A body within its declared length, and a request without a body, pass
straight through: the HTTP server delivers no more than Content-Length bytes,
so only a chunked body is counted (the hot paths pay for no wrapping).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.errors import PayloadTooLarge, error_body
from api.core.settings import Settings

PUSH_PATH = "/api/v1/sync/push"


class _BodyTooLarge(Exception):
    """Raised from `receive` once the body passes the cap (never leaves this module)."""


class RequestBodyLimit:
    """Pure ASGI middleware: 413 `payload_too_large` (`body_too_large` on the push)
    for a body above the path's cap."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.default_limit = settings.request_max_body_bytes
        self.push_limit = settings.sync_max_body_bytes

    def limit_for(self, path: str) -> int:
        return self.push_limit if path.rstrip("/") == PUSH_PATH else self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = b""
        chunked = False
        for name, value in scope.get("headers") or ():  # no dict of every header
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared.isdigit() and not chunked:
            if int(declared) > limit:
                await self._refuse(limit, scope, receive, send)
                return
            # The server frames the body by its Content-Length: no more arrives.
            await self.app(scope, receive, send)
            return
        if not declared and not chunked:  # no body at all (a GET)
            await self.app(scope, receive, send)
            return

        received = 0
        overflowed = False
        response_started = False

        async def counted_receive() -> Message:
            nonlocal received, overflowed
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflowed = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # Whatever the app makes of the interrupted read (FastAPI turns any
            # error while reading a body into a 400), the answer is the 413.
            if overflowed and not response_started:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not overflowed:
                raise
        if overflowed and not response_started:
            await self._refuse(limit, scope, receive, send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        from fastapi.responses import JSONResponse

        # The push keeps the code the sync protocol documents (docs/sync.md).
        push = scope["path"].rstrip("/") == PUSH_PATH
        error = PayloadTooLarge(
            "request body too large; nothing was recorded",
            code="body_too_large" if push else None,
            details={"max_bytes": limit},
        )
        response = JSONResponse(
            error_body(error.code, error.message, error.details),
            status_code=error.status_code,
            headers={"Connection": "close"},  # the rest of the body is never read
        )
        await response(scope, receive, send)
