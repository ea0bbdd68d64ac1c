"""The OpenAPI document, made to tell the truth about errors and the push body.

FastAPI declares its own `{"detail": [...]}` shape for 422 and nothing for
the other error statuses; this API answers every error as
`{"error": {"code", "message", "details"}}` (api/core/errors.py). `openapi_for`
builds FastAPI's document, then:

- declares the error shape once (`components/schemas/ErrorResponse`) and, on
  every operation, each error status the API can answer, with examples;
- drops FastAPI's unused `HTTPValidationError`/`ValidationError` schemas;
- gives the push body (read by the endpoint itself, so FastAPI cannot derive
  it) pydantic's *validation*-mode schema, with its models in
  `components/schemas`: in serialization mode defaulted fields such as a
  mutation's `force` would be marked required, and nested `$defs` referenced
  as `#/$defs/...` point nowhere in an OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from api.sync.schemas import PushRequest

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `not_found`.")
    message: str = Field(description="What went wrong, for people.")
    details: Any = Field(None, description="Structured context (field errors, limits, ...).")


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    error: ErrorDetail


def _example(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


# status: (description, example). Every /api/v1 operation can answer these.
ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("Bad request", _example("bad_request", "the request cannot be served as sent")),
    401: ("Missing or unknown API key", _example("unauthorized", "missing or invalid API key")),
    403: ("The key's scope does not allow this", _example("forbidden", "scope does not allow")),
    404: ("Not found (or another tenant's)", _example("not_found", "not found")),
    409: ("Conflict with the current state", _example("conflict", "version conflict")),
    413: (
        "Body too large",
        _example("payload_too_large", "request body too large", {"max_bytes": 1048576}),
    ),
    422: (
        "The request did not validate; nothing was changed",
        _example(
            "validation_error",
            "request did not validate",
            [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}],
        ),
    ),
    503: (
        "A store is unavailable; nothing was recorded",
        _example(
            "dependency_unavailable",
            "postgres is unavailable; nothing was recorded",
            {"dependency": "postgres"},
        ),
    ),
}
# Answered by the pull side of sync only: the cursor is older than the journal keeps.
GONE = (
    "The cursor is older than the journal's retention: bootstrap again",
    _example("cursor_expired", "cursor older than retention", {"oldest_version": 120}),
)
GONE_PATHS = ("/api/v1/sync/pull", "/api/v1/sync/bootstrap")


def _error_response(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": REF.format(model="ErrorResponse")},
                "example": example,
            }
        },
    }


def _add_schemas(document: dict[str, Any], model: type[BaseModel], mode: str) -> dict[str, Any]:
    """`model`'s JSON schema with its nested models moved to components."""
    schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    return schema


def _push_body(document: dict[str, Any]) -> None:
    push = document.get("paths", {}).get("/api/v1/sync/push", {}).get("post")
    if push is None:
        return
    schema = _add_schemas(document, PushRequest, "validation")
    name = "PushRequest"
    document["components"]["schemas"][name] = schema
    content = push.setdefault("requestBody", {"required": True}).setdefault("content", {})
    body = content.setdefault("application/json", {})
    body["schema"] = {"$ref": REF.format(model=name)}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    error = _add_schemas(document, ErrorResponse, "serialization")
    schemas["ErrorResponse"] = error
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            if not path.startswith("/api/"):
                continue  # /healthz and /readyz declare their own answers
            statuses = dict(ERRORS)
            if path in GONE_PATHS:
                statuses[410] = GONE
            for status, (description, example) in statuses.items():
                key = str(status)
                existing = responses.get(key, {})
                declared = _error_response(existing.get("description") or description, example)
                responses[key] = declared
    _push_body(document)
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve `build_openapi`'s document at /openapi.json (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
