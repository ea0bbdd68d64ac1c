"""Structured logs with a request id, and Prometheus HTTP metrics.

Both are pure ASGI middleware (no BaseHTTPMiddleware), so streamed responses
such as the NDJSON bootstrap and WebSockets pass through untouched.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.errors import unexpected_error_response

HTTP_REQUEST_SECONDS = Histogram(
    "overwatch_http_request_duration_seconds",
    "HTTP request latency by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_REQUESTS = Counter(
    "overwatch_http_requests_total",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


def error_text(exc: BaseException) -> str:
    """An exception as one short log field: its type and message, at most 300 characters."""
    return f"{type(exc).__name__}: {exc}"[:300]


# Standard-library loggers the service's commands rely on: their records are
# rendered like the service's own lines (Alembic's "Running upgrade a -> b").
STDLIB_LOGGERS = ("alembic",)


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """JSON lines on stdout, with contextvars (request id, tenant) merged in.

    `json=False` (commands) renders readable lines instead, coloured only on a
    terminal (and not under NO_COLOR), so piped output holds no escape codes.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        colors = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                timestamper,
                structlog.processors.format_exc_info,
            ],
        )
    )
    for name in STDLIB_LOGGERS:
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers = [handler]  # replaced, so configuring again never doubles lines
        stdlib_logger.setLevel(numeric)
        stdlib_logger.propagate = False


def _route_template(scope: Scope) -> str:
    # Starlette records the matched route in the scope; older versions do not.
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return str(route.path)
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


_ACCESS_LOG_SKIPPED = frozenset(("/metrics", "/healthz", "/health"))


def raw_header(scope: Scope, name: bytes) -> bytes:
    """One request header's value (b"" if absent): a scan of the few raw headers,
    cheaper than building a dict of all of them on every request."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return b""


class _HttpMetrics:
    """The labelled children of the HTTP histogram and counter, one pair per
    (method, route, status), looked up once: `labels()` validates and joins the
    label values under a lock on every call."""

    def __init__(self) -> None:
        self.children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self.children.get(key)
        if children is None:
            labels = {"method": method, "route": route, "status": str(status)}
            children = (HTTP_REQUEST_SECONDS.labels(**labels), HTTP_REQUESTS.labels(**labels))
            self.children[key] = children
        children[0].observe(seconds)
        children[1].inc()


HTTP_METRICS = _HttpMetrics()


class RequestContextMiddleware:
    """Request id (taken from X-Request-ID if sane, else new), access log, metrics.

    It is also where an error no exception handler claims becomes the 500: here,
    inside the request context, the answer carries X-Request-ID and is a complete
    response, so the client's keep-alive connection stays usable. (Starlette's
    own catch-all runs outside every middleware and re-raises, which made the
    server drop the connection.) An error after the response started can only
    end the connection: it is re-raised for the server to do so.

    It runs on every request, so it does little: one scan of the raw headers,
    cached metric children, and the access log line (a no-op below INFO).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("api.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = raw_header(scope, b"x-request-id").decode("latin-1")
        # 32 random hex digits, as uuid4().hex gave, without building a UUID.
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        request_id_header = (b"x-request-id", request_id.encode())
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), request_id_header]
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if scope["type"] != "http" or response_started:
                    raise
                await unexpected_error_response(exc)(scope, receive, send_with_id)
        finally:
            if scope["type"] == "http":
                elapsed = time.perf_counter() - started
                route = _route_template(scope)
                HTTP_METRICS.observe(scope["method"], route, status, elapsed)
                if route not in _ACCESS_LOG_SKIPPED:
                    self.log.info(
                        "http.request",
                        method=scope["method"],
                        route=route,
                        path=scope["path"],
                        status=status,
                        ms=round(elapsed * 1000, 2),
                    )
