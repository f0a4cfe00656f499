"""What every HTTP service answers the same way: request ids, metrics, errors and limits.

Errors are `{"code", "message", "request_id"}` with the codes of
`schemas.errors`, never a stack trace; the request id is echoed in
`X-Request-ID` so a caller can quote it. A 405 names every method of the
path in `Allow`; a 429 or 503 says when to come back in `Retry-After`; a
request body over the limit is a 413 before the app reads it. The OpenAPI
document states all of this (`services.runtime.openapi`), and `/docs` needs
no internet access (`services.runtime.docs`).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.errors import ErrorCode, HaVipError
from schemas.ipv4 import IPV4_PATTERN
from services.runtime.docs import serve_docs_offline
from services.runtime.openapi import document_error_answers
from services.runtime.transient import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

REQUESTS = Counter("havip_http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "havip_http_request_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

REQUEST_ID_HEADER = "x-request-id"
DEFAULT_MAX_REQUEST_BODY_BYTES = 64 * 1024
# Sent with a 429 or 503 whose cause does not know better: soon, but not in a tight loop.
DEFAULT_RETRY_AFTER_SECONDS = 1
COME_BACK_LATER = (429, 503)
# What the HTTP layer itself answers (routing, the body limit); anything else it raises is a bad request.
_HTTP_LAYER_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.THROTTLED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Unmatched paths are one label, so a scanner cannot explode the metric's cardinality.
_UNMATCHED = "unmatched"


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or "unknown")


def choose_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            # A caller's id is echoed only when it is safe to put in a log line.
            if _ACCEPTABLE_ID.fullmatch(candidate):
                return candidate
    return next(_MADE_UP_IDS)


def _made_up_ids() -> Iterator[str]:
    """32 hex digits, unique without a syscall each: a random half per process, a counter half.

    A uuid4 per request read the kernel's random source every time (7% of a forwarder lookup);
    an id only has to tell requests apart in logs and answers, not be unguessable.
    """
    process = secrets.token_hex(8)
    for sequence in itertools.count():
        yield f"{process}{sequence:016x}"


_MADE_UP_IDS = _made_up_ids()

# FastAPI 0.142+ traces every request through OpenTelemetry when a provider is configured, and
# asks whether one is on every request (8% of a forwarder lookup). Our services report through
# Prometheus (/metrics) and set no provider, so it stays off and is not asked.
NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


class RequestContext:
    """Every request gets an id (echoed or made up) and is counted and timed.

    A plain ASGI middleware rather than a `BaseHTTPMiddleware`: it adds no task
    per request, and it sees the status of every answer, errors included.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or _UNMATCHED
            REQUESTS.labels(self.service, scope["method"], label, str(status)).inc()
            REQUEST_SECONDS.labels(self.service, scope["method"], label).observe(time.perf_counter() - started)


class RequestBodyTooLarge(StarletteHTTPException):
    """Raised from `receive` past the limit; an HTTPException, so FastAPI's body parsing passes it on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """Bodies over `max_bytes` answer 413 `PayloadTooLarge`.

    A declared `Content-Length` over the limit is refused before anything is
    read; a body without one (chunked) is counted as it arrives, so a client
    cannot make us buffer more than the limit either way.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_REQUEST_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestBodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except RequestBodyTooLarge:
            # An app with our handlers answers it itself; any other lets it reach us.
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = str(RequestBodyTooLarge(self.max_bytes).detail)
        response = error_response(Request(scope), 413, ErrorCode.PAYLOAD_TOO_LARGE, message)
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            # A malformed one is the server's to refuse; counting holds either way.
            return int(value) if value.isdigit() else None
    return None


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
        if kind == "string_pattern_mismatch" and (error.get("ctx") or {}).get("pattern") == IPV4_PATTERN:
            message = "not an IPv4 address in dotted-quad form (such as 10.0.0.7)"
        if kind == "json_invalid":
            parts.append("the request body is not valid JSON")
        elif location:
            parts.append(f"{'.'.join(location)}: {message}")
        else:
            parts.append(message if kind != "missing" else "a JSON request body is required")
    return "; ".join(parts) or "invalid request"


async def _on_havip_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HaVipError)
    response = error_response(request, exc.http_status, exc.code, exc.message)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif exc.http_status in COME_BACK_LATER:
        response.headers["Retry-After"] = str(DEFAULT_RETRY_AFTER_SECONDS)
    return response


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(request, 400, ErrorCode.INVALID_PARAMETER, describe_validation_errors(exc.errors()))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_LAYER_CODES.get(status, ErrorCode.INVALID_PARAMETER)
    if status == 404:
        message = f"no such resource: {request.url.path}"
    elif status == 405:
        message = f"{request.method} is not allowed here"
    else:
        message = str(exc.detail)
    response = error_response(request, status, code, message)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    if status == 405 and (allowed := allowed_methods(request)):
        response.headers["Allow"] = ", ".join(allowed)
    if status in COME_BACK_LATER and "retry-after" not in response.headers:
        response.headers["Retry-After"] = str(DEFAULT_RETRY_AFTER_SECONDS)
    return response


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this path.

    Starlette's 405 names only the methods of the first route whose path
    matched, but FastAPI makes one route per method (GET and POST on
    `/v1/havips` are two routes), so its `Allow` would leave some out. Each
    method is tried against the whole route tree, so routes of included
    routers (which FastAPI may keep nested) count too.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


async def _on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # An outage, not a bug: the documented 503 with Retry-After, and the connection stays open.
    log.warning("database unavailable request_id=%s path=%s error=%r", request_id_of(request), request.url.path, exc)
    response = error_response(request, 503, ErrorCode.SERVICE_UNAVAILABLE, "the database is unavailable; retry shortly")
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


DATABASE_RETRY_AFTER_SECONDS = 2


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error request_id=%s path=%s", request_id_of(request), request.url.path, exc_info=exc)
    return error_response(
        request, 500, ErrorCode.INTERNAL_ERROR, "internal error; quote the request_id when reporting it"
    )


def install_http_conventions(
    app: FastAPI, service: str, *, max_request_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_BYTES
) -> None:
    """Request ids, metrics, the error body, the body limit, an honest OpenAPI document, offline `/docs`."""
    # Added first, so it runs inside RequestContext: a 413 has a request id and is counted.
    app.add_middleware(BodyLimit, max_bytes=max_request_body_bytes)
    app.add_middleware(RequestContext, service=service)
    app.add_exception_handler(HaVipError, _on_havip_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _on_database_unavailable)
    app.add_exception_handler(Exception, _on_unexpected)
    document_error_answers(app)
    serve_docs_offline(app)


KEEP_ALIVE_SECONDS = 75

# uvicorn's exit code for a failed startup (e.g. the schema is out of date).
STARTUP_FAILURE = 3


def run_http_service(app: FastAPI, service: str, host: str, port: int) -> None:
    """Serve until SIGTERM or Ctrl-C: stop accepting, finish what is in flight,
    then let the app's lifespan close its consumers, producer and pool."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # keep the one logger setup
        access_log=False,  # requests are counted in /metrics instead
        timeout_graceful_shutdown=10,
        # A server that closes an idle keep-alive connection just as a client reuses it makes
        # that client's request fail unanswered. Clients give up idle connections sooner than
        # this (httpx after 5 s, load balancers after about 60 s), so they never race us.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        log.error("%s did not start", service)
        raise SystemExit(STARTUP_FAILURE)
