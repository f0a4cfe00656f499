"""Failures as the API answers them: `{"code", "message", "request_id"}`, never a trace.

`HaVipError` carries its own status (schemas/errors.py is the one error
model); validation errors become `InvalidParameter` naming the field;
anything unexpected is logged here and answered as a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import ErrorCode, HaVipError
from services.gateway.observability import REQUEST_ID_HEADER, request_id_of

log = logging.getLogger(__name__)

# Not domain failures, so not in ErrorCode (yet): what the HTTP layer itself answers.
ROUTE_NOT_FOUND = "NotFound"
METHOD_NOT_ALLOWED = "MethodNotAllowed"
INTERNAL_ERROR = "InternalError"


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    request_id = request_id_of(request)
    return JSONResponse(
        status_code=status,
        content={"code": str(code), "message": message, "request_id": request_id},
        # Set here too: a 500 is answered outside the request-id middleware.
        headers={REQUEST_ID_HEADER: request_id},
    )


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One readable sentence per problem, each naming the field."""
    parts = []
    for error in errors[:5]:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
        kind = error.get("type", "")
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if kind == "json_invalid":
            parts.append("the request body is not valid JSON")
        elif location:
            parts.append(f"{'.'.join(location)}: {message}")
        else:
            parts.append(message if kind != "missing" else "a JSON request body is required")
    return "; ".join(parts) or "invalid request"


async def _on_havip_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HaVipError)
    return error_response(request, exc.http_status, exc.code, exc.message)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(request, 400, ErrorCode.INVALID_PARAMETER, describe_validation_errors(exc.errors()))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response(request, 404, ROUTE_NOT_FOUND, f"no such resource: {request.url.path}")
    if exc.status_code == 405:
        return error_response(request, 405, METHOD_NOT_ALLOWED, f"{request.method} is not allowed here")
    return error_response(request, exc.status_code, ErrorCode.INVALID_PARAMETER, str(exc.detail))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error request_id=%s path=%s", request_id_of(request), request.url.path, exc_info=exc)
    return error_response(request, 500, INTERNAL_ERROR, "internal error; quote the request_id when reporting it")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HaVipError, _on_havip_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
