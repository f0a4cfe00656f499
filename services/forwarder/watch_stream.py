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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.forwarder.watch import (
    WatchFilter,
    WatchHub,
    heartbeat_line,
    hello_line,
    resync_line,
    synced_line,
)

FELL_BEHIND = "this watcher fell too far behind; watch again without since for the whole table"


async def watch_lines(
    hub: WatchHub,
    watch_filter: WatchFilter,
    *,
    epoch: str | None,
    since: int | None,
    heartbeat_seconds: float,
) -> AsyncIterator[bytes]:
    wakeup = asyncio.Event()
    # Registered when the body starts, so a response that never starts leaves no watcher behind.
    watcher = hub.watch(watch_filter, wakeup.set, epoch=epoch, since=since)
    try:
        yield hello_line(hub.epoch, watcher)
        for lines in watcher.start_lines():
            yield lines
            await asyncio.sleep(0)
        yield synced_line(watcher.revision)
        while not watcher.overflowed:
            if lines := watcher.take():
                yield lines
                continue
            wakeup.clear()
            try:
                async with asyncio.timeout(heartbeat_seconds):
                    await wakeup.wait()
            except TimeoutError:
                # Nothing pending: every change this watcher wants up to now has been sent.
                yield heartbeat_line(hub.revision)
        yield resync_line(FELL_BEHIND)
    finally:
        hub.stop_watching(watcher)
