"""One error type, one JSON shape: `{"error": {"code", "message", "details"}}`.

Services raise `OverwatchError` subclasses; a single handler renders them.
Validation errors from FastAPI and HTTP errors from Starlette are rendered in
the same shape, so clients parse one format everywhere.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from neo4j.exceptions import (
    AuthError,
    ConnectionPoolError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from relational.database import is_unreachable

log = structlog.get_logger("api.core.errors")


class OverwatchError(Exception):
    """Base error: a status code, a stable machine code and a human message."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details
        self.headers = headers


class NotFound(OverwatchError):
    status_code = 404
    code = "not_found"


class Unauthorized(OverwatchError):
    status_code = 401
    code = "unauthorized"


class Forbidden(OverwatchError):
    status_code = 403
    code = "forbidden"


class Conflict(OverwatchError):
    status_code = 409
    code = "conflict"


class Invalid(OverwatchError):
    status_code = 422
    code = "validation_error"


class PayloadTooLarge(OverwatchError):
    status_code = 413
    code = "payload_too_large"


class DependencyUnavailable(OverwatchError):
    status_code = 503
    code = "dependency_unavailable"


def postgres_unavailable() -> DependencyUnavailable:
    return DependencyUnavailable(
        "postgres is unavailable; nothing was recorded", details={"dependency": "postgres"}
    )


def neo4j_unavailable(reason: str) -> DependencyUnavailable:
    return DependencyUnavailable(
        "neo4j is unavailable; retry shortly",
        code="neo4j_unavailable",
        details={"dependency": "neo4j", "reason": reason},
        headers={"Retry-After": "5"},
    )


def neo4j_failure_reason(exc: BaseException) -> str | None:
    """Why a Neo4j error means "the graph cannot answer now", or None if it is a bug.

    Unreachable or restarting servers, expired sessions, an exhausted driver pool,
    a transaction past its time limit and wrong credentials all make the
    graph unavailable to the caller; a Cypher or constraint error does not.
    """
    if isinstance(exc, (ServiceUnavailable, SessionExpired)):
        return "unreachable"
    if isinstance(exc, ConnectionPoolError):
        return "busy"
    if isinstance(exc, AuthError):
        return "credentials refused"
    if isinstance(exc, Neo4jError) and "TransactionTimedOut" in (exc.code or ""):
        return "timed out"
    if isinstance(exc, TransientError):
        return "transient"
    return None


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OverwatchError)
    async def _overwatch(request: Request, exc: OverwatchError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("request.dependency_error", code=exc.code, message=exc.message)
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("validation_error", "request did not validate", _field_errors(exc)),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # Postgres dying mid-request (after authentication) surfaces from whichever
    # service held the connection; answer it the same way everywhere.
    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    async def _postgres(request: Request, exc: Exception) -> JSONResponse:
        if is_unreachable(exc):
            return await _overwatch(request, postgres_unavailable())
        return await _unexpected(request, exc)

    # A Neo4j that is down, restarting or too slow is a 503 naming it on every
    # read endpoint (venues, world model, operations, search), not a 500.
    @app.exception_handler(Neo4jError)
    @app.exception_handler(DriverError)
    async def _neo4j(request: Request, exc: Exception) -> JSONResponse:
        reason = neo4j_failure_reason(exc)
        if reason is not None:
            return await _overwatch(request, neo4j_unavailable(reason))
        return await _unexpected(request, exc)

    # A database statement that ran past its time (asyncpg's command timeout,
    # e.g. a writer queued on a tenant's counter row): the transaction is rolled
    # back, nothing was recorded; the client may retry.
    @app.exception_handler(TimeoutError)
    async def _timeout(request: Request, exc: Exception) -> JSONResponse:
        return await _overwatch(
            request,
            DependencyUnavailable(
                "the database did not answer in time; nothing was recorded",
                code="timeout",
                details={"dependency": "postgres"},
            ),
        )

    # Registered for completeness; in practice RequestContextMiddleware
    # (api/core/observability.py) catches what no handler above claims, inside the
    # request context, so the 500 carries X-Request-ID and keeps the connection.
    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc)


def unexpected_error_response(exc: BaseException) -> JSONResponse:
    """The 500 for an error no handler claims: logged with its trace, body without it."""
    log.error("request.unhandled", error_type=type(exc).__name__, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
