"""Watch clients for `havip bench watch`: a share of the watchers, in a process of their own.

    python -m services.dev.bench_watchers --url URL --watchers N --epoch E --since R --report FILE

The bench runs several of these, so reading 1,000 streams is spread over
processes (and cores) and is not what the bench measures. Each watcher is one
HTTP/1.1 connection (`GET /v1/routes:watch?epoch=E&since=R`: only the changes
from R on, no table) read by a bare asyncio Protocol on uvloop: the time a
piece of the stream arrives is taken as it is handed over, before anything is
parsed, and of each line only the `havip_id` and `version` of a change are
picked out. Each watcher keeps the first time it saw each change.

It talks to the bench over stdin and stdout, one JSON object a line:
  out {"ready": N}              every watcher has its hello and synced lines
  out {"changes": C}            change lines received so far, every half second
  in  report                    (a line): write the receipts to FILE, then stop
  out {"reported": FILE}        FILE holds {"receipts": [[havip_id, version, [t, ...]], ...], "tally": {...}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import uvloop

from services.dev.watch_delays import ChangeKey

_CHANGE = re.compile(rb'"havip_id":"([^"]*)","version":(\d+)')
_CHANGE_TYPES = (b'{"type":"route"', b'{"type":"removed"')
_OPEN_AT_ONCE = 50  # connections opened together: a burst of 1,000 SYNs would overflow the listen backlog


def change_key(line: bytes) -> ChangeKey | None:
    """The (havip_id, version) of a line carrying a change; None for hello, synced, heartbeat and resync."""
    if not line.startswith(_CHANGE_TYPES):
        return None
    found = _CHANGE.search(line)
    return None if found is None else (found[1].decode(), int(found[2]))


class ChunkedBody:
    """HTTP/1.1 chunked transfer coding, undone as bytes arrive: `feed` answers the body's bytes so far."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._left = 0  # bytes of the current chunk still to come
        self._after_chunk = False  # a chunk's data ended: its CRLF comes next
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        body = bytearray()
        while not self.finished:
            if self._left:
                taken = self._pending[: self._left]
                body += taken
                del self._pending[: len(taken)]
                self._left -= len(taken)
                if self._left:
                    break
                self._after_chunk = True
            if self._after_chunk:
                if len(self._pending) < 2:
                    break
                del self._pending[:2]
                self._after_chunk = False
            end = self._pending.find(b"\r\n")
            if end < 0:
                break
            size = int(bytes(self._pending[:end]).split(b";", 1)[0], 16)  # no chunk extensions expected; ignored
            del self._pending[: end + 2]
            self._left = size
            self.finished = size == 0  # trailers, if any, are not read
        return bytes(body)


@dataclass
class Tally:
    changes: int = 0  # change lines received, over every watcher
    heartbeats: int = 0
    resyncs: int = 0  # watchers told they fell behind (their stream then ends)
    closed: int = 0  # streams that ended while the bench ran


class Watch(asyncio.Protocol):
    """One watcher: its stream's lines, timestamped on arrival, into the process's receipts."""

    def __init__(self, request: bytes, receipts: dict[ChangeKey, list[float]], tally: Tally) -> None:
        self._request = request
        self._receipts = receipts
        self._tally = tally
        self._head: bytearray | None = bytearray()  # None once the response's head is read
        self._body = ChunkedBody()
        self._partial = b""
        self._seen: set[ChangeKey] = set()
        self.transport: asyncio.Transport | None = None
        self.synced: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but do all this needs
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.time()  # first: the delay ends when the bytes are here, not when they are parsed
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head = None
            if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
                self._fail(f"the watch was refused: {head.decode(errors='replace')}")
                return
        lines = (self._partial + self._body.feed(data)).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line, now)

    def _line(self, line: bytes, now: float) -> None:
        key = change_key(line)
        if key is not None:
            self._tally.changes += 1
            if key not in self._seen:
                self._seen.add(key)
                self._receipts.setdefault(key, []).append(now)
        elif line.startswith(b'{"type":"synced"'):
            if not self.synced.done():
                self.synced.set_result(None)
        elif line.startswith(b'{"type":"heartbeat"'):
            self._tally.heartbeats += 1
        elif line.startswith(b'{"type":"resync"'):
            self._tally.resyncs += 1
        elif line.startswith(b'{"type":"hello"') and b'"resync":false' not in line:
            self._fail("the forwarder sent the whole table: the epoch or position given is not its own")

    def connection_lost(self, exc: Exception | None) -> None:
        self._tally.closed += 1
        self._fail(f"the stream ended before synced ({exc or 'closed'})")

    def _fail(self, reason: str) -> None:
        if not self.synced.done():
            self.synced.set_exception(RuntimeError(reason))
        if self.transport is not None:
            self.transport.close()


async def run_watchers(url: str, count: int, epoch: str, since: int) -> dict[str, object]:
    """Hold `count` watchers until the bench asks for the report; answers it."""
    loop = asyncio.get_running_loop()
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    request = (
        f"GET /v1/routes:watch?epoch={epoch}&since={since} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nAccept: application/x-ndjson\r\n\r\n"
    ).encode()
    receipts: dict[ChangeKey, list[float]] = {}
    tally = Tally()
    watches: list[Watch] = []
    for start in range(0, count, _OPEN_AT_ONCE):
        batch = [Watch(request, receipts, tally) for _ in range(min(_OPEN_AT_ONCE, count - start))]
        await asyncio.gather(*(loop.create_connection(_itself(w), host, port) for w in batch))
        watches += batch
    async with asyncio.timeout(120):
        await asyncio.gather(*(watch.synced for watch in watches))
    _say({"ready": count})

    asked = loop.run_in_executor(None, sys.stdin.readline)  # the bench's "report", or EOF when it is gone
    while not asked.done():
        await asyncio.wait([asked], timeout=0.5)
        _say({"changes": tally.changes})
    rows = [[havip_id, version, times] for (havip_id, version), times in receipts.items()]
    for watch in watches:
        if watch.transport is not None:
            watch.transport.close()
    return {"receipts": rows, "tally": asdict(tally)}


def _itself(watch: Watch) -> Callable[[], Watch]:
    """A protocol factory for one connection that is already made."""
    return lambda: watch


def _say(message: dict[str, object]) -> None:
    print(json.dumps(message), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the forwarder, e.g. http://127.0.0.1:8081")
    parser.add_argument("--watchers", type=int, required=True)
    parser.add_argument("--epoch", required=True)
    parser.add_argument("--since", type=int, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    said = uvloop.run(run_watchers(args.url, args.watchers, args.epoch, args.since))
    args.report.write_text(json.dumps(said))
    _say({"reported": str(args.report)})


if __name__ == "__main__":
    main()
