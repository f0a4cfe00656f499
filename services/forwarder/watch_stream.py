"""A watcher as an HTTP body: JSON lines, pushed as changes are applied (`GET /v1/routes:watch`).

    {"type":"hello","epoch":E,"revision":R,"resync":true}   first; resync: drop your copy
    {"type":"route",...} / {"type":"removed",...}           your copy up to R (the table, or what you missed)
    {"type":"synced","revision":R}                          your copy is the table's at R
    {"type":"route"|"removed","revision":N,...}             every later change, in order (N > R)
    {"type":"heartbeat","revision":N}                       when idle; nothing you want changed up to N
    {"type":"resync","reason":...}                          last: you fell behind; watch again without since

The line's grammar lives in services/forwarder/watch.py; this module only
paces it: a big start yields the loop between chunks (lookups keep their
latency), and an idle stream gets a heartbeat so both ends know it is alive.

Why lines go straight to an ASGI `send` rather than through an async
generator and a StreamingResponse: a change goes to every watcher, so
whatever a chunk costs is paid a thousand times per change. Profiles of
1,000 watchers spent more of the fan-out in the response and middleware
layers and in an `asyncio.timeout` per wait than in writing to the sockets.
Here a wait is one future, the heartbeat one timer per idle period, and a
client that leaves is forgotten as soon as its `http.disconnect` arrives.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.forwarder.watch import (
    WatchFilter,
    WatchHub,
    heartbeat_line,
    hello_line,
    resync_line,
    synced_line,
)

FELL_BEHIND = "this watcher fell too far behind; watch again without since for the whole table"
NDJSON = "application/x-ndjson"


async def send_watch(
    hub: WatchHub,
    watch_filter: WatchFilter,
    receive: Receive,
    send: Send,
    *,
    epoch: str | None,
    since: int | None,
    heartbeat_seconds: float,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Answer one watch on an ASGI connection, until the client leaves or the watcher falls behind."""
    pacer = _Pacer(heartbeat_seconds)
    # Registered before anything is sent: it misses no change applied from now on.
    watcher = hub.watch(watch_filter, pacer.wake, epoch=epoch, since=since)
    listener = asyncio.get_running_loop().create_task(_until_disconnect(receive))
    listener.add_done_callback(pacer.leave)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await pacer.send(send, hello_line(hub.epoch, watcher))
        for lines in watcher.start_lines():
            if pacer.left:
                return
            await pacer.send(send, lines)
            await asyncio.sleep(0)
        await pacer.send(send, synced_line(watcher.revision))
        while not pacer.left:
            if watcher.overflowed:
                await send({"type": "http.response.body", "body": resync_line(FELL_BEHIND), "more_body": False})
                return
            if lines := watcher.take():
                await pacer.send(send, lines)
            elif pacer.beat_due:
                # Nothing pending: every change this watcher wants up to now has been sent.
                await pacer.send(send, heartbeat_line(hub.revision))
            else:
                await pacer.wait()
    finally:
        hub.stop_watching(watcher)
        listener.cancel()
        pacer.stop()


class _Pacer:
    """When a stream has something to send: woken by its watcher, by a due heartbeat, or by its client leaving."""

    __slots__ = ("_loop", "_heartbeat", "_waiter", "_timer", "_last_sent", "beat_due", "left")

    def __init__(self, heartbeat_seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._heartbeat = heartbeat_seconds
        self._waiter: asyncio.Future[None] | None = None
        self._last_sent = self._loop.time()
        # One timer per idle period, not one per wait: a busy stream re-arms nothing per change.
        self._timer = self._loop.call_later(heartbeat_seconds, self._check_idle)
        self.beat_due = False
        self.left = False

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def leave(self, _: object = None) -> None:
        self.left = True
        self.wake()

    async def wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def send(self, send: Send, lines: bytes) -> None:
        self.beat_due = False
        self._last_sent = self._loop.time()
        await send({"type": "http.response.body", "body": lines, "more_body": True})

    def stop(self) -> None:
        self._timer.cancel()
        self.left = True

    def _check_idle(self) -> None:
        idle = self._loop.time() - self._last_sent
        if idle >= self._heartbeat:
            self.beat_due = True
            self.wake()
            idle = 0.0
        self._timer = self._loop.call_later(self._heartbeat - idle, self._check_idle)


async def _until_disconnect(receive: Receive) -> None:
    # A GET's only request message is its empty body; what follows is the client leaving.
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass


class WatchResponse(Response):
    """`send_watch` as the response FastAPI's handler returns (the way a malformed-looking query goes)."""

    def __init__(
        self,
        hub: WatchHub,
        watch_filter: WatchFilter,
        *,
        epoch: str | None,
        since: int | None,
        heartbeat_seconds: float,
    ) -> None:
        # Not Response.__init__: it would declare a Content-Length for an empty body.
        self.status_code = 200
        self.media_type = NDJSON
        self.background = None
        self.raw_headers = [(b"content-type", NDJSON.encode())]
        self._watch = (hub, watch_filter, epoch, since, heartbeat_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, watch_filter, epoch, since, heartbeat_seconds = self._watch
        await send_watch(
            hub,
            watch_filter,
            receive,
            send,
            epoch=epoch,
            since=since,
            heartbeat_seconds=heartbeat_seconds,
            headers=list(self.raw_headers),
        )
