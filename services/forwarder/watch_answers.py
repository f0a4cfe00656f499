"""`GET /v1/routes:watch`, answered in front of FastAPI (as services/forwarder/lookups.py answers lookups).

Why: every chunk of a StreamingResponse passes through each middleware's
`send` wrapper and FastAPI's own layers, and a change is one chunk per
watcher: with 1,000 watchers those layers cost more than the sockets. A
well-formed watch here gets its lines sent straight to the server's `send`.

What it answers: a well-formed query while the table is loaded. Everything
else goes on to FastAPI untouched: an unknown or repeated parameter, a
percent-escaped query, a value FastAPI would refuse or read differently (an
empty or too long id, a `since` that is not plain digits, an epoch not of
the pattern), and any request while the table is still loading (its 503).
So validation errors, the 503 and the OpenAPI document stay defined in one
place (services/forwarder/app.py), and tests/integration/test_forwarder_watch_answers.py
checks that both ways give the same stream.

Request ids and the request metrics are those of the app (services/runtime/lean_http.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from services.forwarder.lookups import MAX_VPC_ID_CHARS, plain_query
from services.forwarder.watch import WatchFilter, WatchHub
from services.forwarder.watch_stream import NDJSON, send_watch
from services.runtime.http import REQUEST_ID_HEADER
from services.runtime.lean_http import LeanAnswers, request_id_for

WATCH_PATH = "/v1/routes:watch"
MAX_HOST_ID_CHARS = 128
EPOCH_PATTERN = "^[0-9a-f]{32}$"
# Longer runs of digits are left to FastAPI: pydantic, not we, decides how big an int may be.
_MAX_SINCE_DIGITS = 18
_EPOCH = re.compile(EPOCH_PATTERN)
_WATCH_PARAMETERS = frozenset(("vpc_id", "host_id", "since", "epoch"))
_NDJSON = (b"content-type", NDJSON.encode())
_ID_HEADER = REQUEST_ID_HEADER.encode()


class WatchQuery:
    """The watch a well-formed query asks for."""

    __slots__ = ("filter", "epoch", "since")

    def __init__(self, watch_filter: WatchFilter, epoch: str | None, since: int | None) -> None:
        self.filter = watch_filter
        self.epoch = epoch
        self.since = since


class RouteWatches:
    def __init__(
        self,
        app: ASGIApp,
        hub: WatchHub,
        ready: Callable[[], bool],
        heartbeat_seconds: float,
        service: str = "forwarder",
    ) -> None:
        self.app = app
        self.hub = hub
        self.ready = ready
        self.heartbeat_seconds = heartbeat_seconds
        self.answers = LeanAnswers(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == WATCH_PATH
            and scope["method"] == "GET"
            and (query := watch_query(scope["query_string"])) is not None
            and self.ready()
        ):
            await self._answer(scope, receive, send, query)
            return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, query: WatchQuery) -> None:
        started = time.perf_counter()
        request_id = request_id_for(scope)
        try:
            await send_watch(
                self.hub,
                query.filter,
                receive,
                send,
                epoch=query.epoch,
                since=query.since,
                heartbeat_seconds=self.heartbeat_seconds,
                headers=[_NDJSON, (_ID_HEADER, request_id.encode())],
            )
        finally:
            # Counted when the stream ends, as RequestContext counts FastAPI's way.
            self.answers.count("GET", WATCH_PATH, 200, started)


def watch_query(query: bytes) -> WatchQuery | None:
    """What a plain, valid watch query asks for; None for FastAPI to answer."""
    found = plain_query(query, _WATCH_PARAMETERS)
    if found is None:
        return None
    vpc_id, host_id = found.get("vpc_id"), found.get("host_id")
    since_text, epoch = found.get("since"), found.get("epoch")
    if vpc_id is not None and not 0 < len(vpc_id) <= MAX_VPC_ID_CHARS:
        return None
    if host_id is not None and not 0 < len(host_id) <= MAX_HOST_ID_CHARS:
        return None
    if epoch is not None and not _EPOCH.fullmatch(epoch):
        return None
    since = None
    if since_text is not None:
        plain = since_text.isascii() and since_text.isdigit() and len(since_text) <= _MAX_SINCE_DIGITS
        if not plain or (since_text[0] == "0" and since_text != "0"):
            return None
        since = int(since_text)
    return WatchQuery(WatchFilter(vpc_id, host_id), epoch, since)
