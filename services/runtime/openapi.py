"""The OpenAPI document states every answer the server can give, and nothing it does not.

FastAPI documents a failed validation as 422 with its own error shape; we
answer 400 with `ErrorBody`. It documents none of the errors that come
from auth, routing, limits or an unavailable broker or database. This
module rewrites the generated document once, so that each operation lists:

    400  it takes parameters or a body            (InvalidParameter, InvalidIpAddress.*)
    401  it declares `security`                   (Unauthorized)
    403  it declares `security`                   (Forbidden)
    404  it has path parameters                   (NotFound.*)
    413  it takes a body                          (PayloadTooLarge)
    429  it declares `security`; with Retry-After (Throttling)
    503  it lives under /v1/; with Retry-After    (ServiceUnavailable: the broker or the database)
    500  always                                   (InternalError)

and every error answer, declared here or by a route, is `ErrorBody` unless
the route gave it another schema (a 429 or 503 `ErrorBody` carries
`Retry-After`). 405 is left out on purpose: a method the
document does not list is not an operation to document it on.
"""

from __future__ import annotations

import copy
import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

OpenApiDocument = dict[str, Any]

ERROR_BODY_REF = "#/components/schemas/ErrorBody"
# What FastAPI adds for its 422; gone once no operation mentions 422.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_OPERATION_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# Operations that produce to the broker or read the database: they answer 503 when either is away.
_NEEDS_BACKENDS_PREFIX = "/v1/"


class ErrorBody(BaseModel):
    """The body of every error answer; `request_id` is the one in `X-Request-ID`."""

    code: str
    message: str
    request_id: str


RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "Whole seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}

_DESCRIPTIONS = {
    400: "The request is malformed: `InvalidParameter`, `InvalidIpAddress.*`.",
    401: "No bearer token, or one that is not valid: `Unauthorized`.",
    403: "The token may not make this call: `Forbidden`.",
    404: "No such resource, or not the caller's: `NotFound.*`.",
    413: "The request body is larger than the server accepts: `PayloadTooLarge`.",
    429: "Too many requests with this token: `Throttling`; retry after `Retry-After` seconds.",
    500: "A bug: `InternalError`; quote the request_id when reporting it.",
    503: "The broker or the database is unavailable: `ServiceUnavailable`; retry after `Retry-After` seconds.",
}
_COME_BACK_LATER = frozenset({429, 503})


def document_error_answers(app: FastAPI) -> None:
    """Make `app.openapi()` (and so `/openapi.json` and `/docs`) serve the rewritten document."""
    generate = app.openapi

    def openapi() -> OpenApiDocument:
        if app.openapi_schema is None:
            app.openapi_schema = with_error_answers(generate())
        return app.openapi_schema

    # FastAPI's documented way to serve another document: replace the method (mypy objects to
    # assigning to a method).
    app.openapi = openapi  # type: ignore[method-assign]


def with_error_answers(document: OpenApiDocument) -> OpenApiDocument:
    """A copy of a FastAPI-generated document with the errors the server gives (see the module's table)."""
    document = copy.deepcopy(document)
    default_security = document.get("security")
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in _OPERATION_METHODS:
                _document_operation(path, operation, operation.get("security", default_security))
    _tidy_components(document)
    return document


def error_statuses(path: str, operation: dict[str, Any], security: list[dict[str, Any]] | None) -> set[int]:
    """The error statuses the server can give for this operation (the module's table)."""
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    # `{}` among the requirements makes a token optional: nothing to refuse then.
    authenticated = bool(security) and all(requirement for requirement in security or [])
    statuses = {500}
    if parameters or has_body or "422" in operation.get("responses", {}):
        statuses.add(400)
    if authenticated:
        statuses |= {401, 403, 429}
    if any(parameter.get("in") == "path" for parameter in parameters):
        statuses.add(404)
    if has_body:
        statuses.add(413)
    if path.startswith(_NEEDS_BACKENDS_PREFIX):
        statuses.add(503)
    return statuses


def _document_operation(path: str, operation: dict[str, Any], security: list[dict[str, Any]] | None) -> None:
    statuses = error_statuses(path, operation, security)
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    for status in sorted(statuses):
        responses.setdefault(str(status), {})
    for key, response in responses.items():
        if not key.isdigit() or int(key) < 400:
            continue
        status = int(key)
        if response.get("description") in (None, "", _phrase(status)):
            response["description"] = _DESCRIPTIONS.get(status) or _phrase(status) or "An error."
        content = response.get("content")
        if not content or _mentions_validation_schemas(content):
            response["content"] = content = {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}}
        # Only our error answers promise Retry-After; a route's own 503 (readiness) says what it sends.
        if status in _COME_BACK_LATER and ERROR_BODY_REF in json.dumps(content):
            response.setdefault("headers", {}).setdefault("Retry-After", copy.deepcopy(RETRY_AFTER_HEADER))
    operation["responses"] = dict(sorted(responses.items()))


def _tidy_components(document: OpenApiDocument) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        if name in schemas:
            # Look at the document without this schema: only references from elsewhere keep it.
            rest = {**document, "components": {**document["components"], "schemas": {**schemas}}}
            del rest["components"]["schemas"][name]
            if f'"#/components/schemas/{name}"' not in json.dumps(rest):
                del schemas[name]


def _mentions_validation_schemas(content: dict[str, Any]) -> bool:
    text = json.dumps(content)
    return any(f'"#/components/schemas/{name}"' in text for name in _FASTAPI_VALIDATION_SCHEMAS)


def _phrase(status: int) -> str | None:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return None
