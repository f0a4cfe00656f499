"""Every request gets an id (echoed or made up) and is counted and timed.

A plain ASGI middleware rather than a `BaseHTTPMiddleware`: it adds no task
per request, and it sees the status of every answer, errors included.
"""

from __future__ import annotations

import re
import time
import uuid

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "havip_gateway_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "havip_gateway_request_seconds", "Time to answer an HTTP request", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
VRRP_REPORTS_ACCEPTED = Counter(
    "havip_gateway_vrrp_reports_accepted_total", "VRRP reports published to vrrp.events", ["state"]
)
COMMAND_RESULTS = Counter(
    "havip_gateway_command_results_total", "Command results read from havip.command-results", ["outcome"]
)

REQUEST_ID_HEADER = "x-request-id"
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Unmatched paths are one label, so a scanner cannot explode the metric's cardinality.
_UNMATCHED = "unmatched"


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or "unknown")


def _choose_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            # A caller's id is echoed only when it is safe to put in a log line.
            if _ACCEPTABLE_ID.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _choose_request_id(scope)
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
            REQUESTS.labels(scope["method"], label, str(status)).inc()
            REQUEST_SECONDS.labels(scope["method"], label).observe(time.perf_counter() - started)
