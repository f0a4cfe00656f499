"""Answering a hot route in front of FastAPI: what the forwarder's lookups and the gateway's
report intake share.

Such a path (put in front of the app with `FrontedApp.put_in_front`) answers the common,
well-formed request itself and passes every other request on to FastAPI untouched (a body
it already read is replayed), so validation errors, 405, 413 and the OpenAPI document stay
defined once, in the app. What it answers must look exactly like the app's answer: the same
request id header, the same error body, the same `Retry-After`, and the same request
metrics (services/runtime/http.py).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client.metrics import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.errors import HaVipError
from services.runtime.http import (
    COME_BACK_LATER,
    DEFAULT_RETRY_AFTER_SECONDS,
    REQUEST_ID_HEADER,
    REQUEST_SECONDS,
    REQUESTS,
    choose_request_id,
)

_JSON = (b"content-type", b"application/json")


class FrontedApp(FastAPI):
    """A FastAPI app whose lean paths sit in front of all of it.

    `add_middleware` puts a middleware inside FastAPI's own layers (its error and telemetry
    middlewares, Starlette's routing entry): about a tenth of a forwarder lookup under wrk.
    A lean path answers a complete request by itself, so it goes in front of those too.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._front: ASGIApp = super().__call__

    def put_in_front(self, middleware: Callable[..., ASGIApp], **options: Any) -> None:
        """Wrap everything so far (the last one put in front is the first to see a request)."""
        self._front = middleware(self._front, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)


_ID_HEADER = REQUEST_ID_HEADER.encode()


class LeanAnswers:
    """Sends a finished answer straight to the server, with the app's request id and metrics."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._metrics: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def answer(
        self,
        scope: Scope,
        send: Send,
        route: str,
        status: int,
        body: bytes,
        started: float,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        request_id = request_id_for(scope)
        sent = [_JSON, (b"content-length", b"%d" % len(body)), (_ID_HEADER, request_id.encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": sent})
        await send({"type": "http.response.body", "body": body})
        self.count(scope["method"], route, status, started)

    def count(self, method: str, route: str, status: int, started: float) -> None:
        """Count an answered request as the app's RequestContext does (a stream: when it ends)."""
        counter, seconds = self._metrics_for(method, route, status)
        counter.inc()
        seconds.observe(time.perf_counter() - started)

    async def error(self, scope: Scope, send: Send, route: str, error: HaVipError, started: float) -> None:
        """The answer the app's HaVipError handler gives: `{code, message, request_id}`, Retry-After."""
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if error.retry_after is not None:
            headers = ((b"retry-after", b"%d" % max(1, math.ceil(error.retry_after))),)
        elif error.http_status in COME_BACK_LATER:
            headers = ((b"retry-after", b"%d" % DEFAULT_RETRY_AFTER_SECONDS),)
        body = error_body(str(error.code), error.message, request_id_for(scope))
        await self.answer(scope, send, route, error.http_status, body, started, headers)

    def _metrics_for(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        key = (method, route, status)
        if (found := self._metrics.get(key)) is None:
            found = (
                REQUESTS.labels(self.service, method, route, str(status)),
                REQUEST_SECONDS.labels(self.service, method, route),
            )
            self._metrics[key] = found
        return found


def request_id_for(scope: Scope) -> str:
    """The request's id, chosen once (echoed or made up) and kept in the scope as the app keeps it."""
    state = scope.setdefault("state", {})
    if (request_id := state.get("request_id")) is None:
        request_id = state["request_id"] = choose_request_id(scope)
    return str(request_id)


def error_body(code: str, message: str, request_id: str) -> bytes:
    # Encoded as Starlette's JSONResponse encodes, so both paths answer the same bytes.
    error = {"code": code, "message": message, "request_id": request_id}
    return json.dumps(error, ensure_ascii=False, separators=(",", ":")).encode()


def json_body_within(scope: Scope, max_bytes: int) -> bool:
    """A declared length within the limit, and declared JSON (FastAPI reads nothing else as JSON)."""
    length = content_type = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"content-type":
            content_type = value
    if length is None or not length.isdigit() or int(length) > max_bytes:
        return False
    return content_type == b"application/json" or (
        content_type is not None and content_type.startswith(b"application/json;")
    )


async def read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client went away."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read once, then whatever the connection says next."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        message: dict[str, Any] = {"type": "http.request", "body": body, "more_body": False}
        return message

    return again
