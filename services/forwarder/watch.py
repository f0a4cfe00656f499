"""Watchers: data-plane agents that keep their own copy of (part of) the route table.

Pure and synchronous, like the table it listens to; `services/forwarder/app.py`
turns a `Watcher` into a stream of JSON lines (`GET /v1/routes:watch`).

Positions. Every change the table applies gets the next `revision` of this
process; `epoch` names the process's sequence. A watcher that comes back
with `(epoch, since)` gets only the changes after `since`, provided the hub
still remembers them (the last `log_size` changes); otherwise, and whenever
the epoch is another one (the forwarder restarted), it gets the whole table
again, marked `resync`. Revisions are contiguous: the log is indexed by them.

Fairness. Applying a change never waits for a watcher: the change is put in
each interested watcher's buffer, which holds at most `buffer_size` lines. A
watcher whose buffer is full is dropped from the hub there and then, its
buffer emptied, and it is told to resynchronise: one slow or stalled agent
costs a bounded amount of memory and nobody else's latency.

Filters. A watcher may name a VPC, a host (the owner's `host_id`), or both.
A change reaches it when the route matches before or after the change, so a
route that moves off a watched host (or leaves a VPC) is sent too: the line
names its new host, and the agent drops it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import NamedTuple

from services.forwarder.routes import HeldRoute, RouteChange, RouteTable

_quote: Callable[[str], str] = json.encoder.encode_basestring


class WatchFilter(NamedTuple):
    vpc_id: str | None = None
    host_id: str | None = None

    def admits_route(self, route: HeldRoute | None) -> bool:
        return (
            route is not None
            and (self.vpc_id is None or route.private_key[0] == self.vpc_id)
            and (self.host_id is None or route.host_id == self.host_id)
        )

    def admits(self, change: RouteChange) -> bool:
        return self.admits_route(change.route) or self.admits_route(change.previous)


class Logged:
    """A change as the hub remembers it; its line is encoded once, by the first watcher that sends it."""

    __slots__ = ("change", "_line")

    def __init__(self, change: RouteChange) -> None:
        self.change = change
        self._line: bytes | None = None

    @property
    def line(self) -> bytes:
        if self._line is None:
            change = self.change
            if change.route is None:
                self._line = removed_line(change)
            else:
                self._line = route_line(change.route, change.revision)
        return self._line


class Watcher:
    """One watch stream's state: where it starts, and the changes it has not sent yet."""

    __slots__ = ("filter", "resync", "revision", "snapshot", "backlog", "_pending", "_limit", "overflowed", "_wake")

    def __init__(self, watch_filter: WatchFilter, limit: int, wake: Callable[[], None]) -> None:
        self.filter = watch_filter
        # Whether the stream starts with the whole (filtered) table, and as of which revision.
        self.resync = True
        self.revision = 0
        # The routes of a full start, still to be sent (unfiltered; see `start_lines`).
        self.snapshot: list[HeldRoute] = []
        # Or, when resuming, the changes it missed up to `revision` (filtered).
        self.backlog: list[Logged] = []
        self._pending: list[Logged] = []
        self._limit = limit
        self.overflowed = False
        self._wake = wake

    def offer(self, logged: Logged) -> bool:
        """Buffer a change; False (and the buffer dropped) when it is full: the watcher must resync."""
        if len(self._pending) >= self._limit:
            self._pending = []
            self.overflowed = True
            self._wake()
            return False
        self._pending.append(logged)
        if len(self._pending) == 1:
            self._wake()
        return True

    def take(self) -> bytes:
        """Every buffered change as JSON lines, in the order applied; empties the buffer."""
        pending, self._pending = self._pending, []
        return b"".join([logged.line for logged in pending])

    def start_lines(self, chunk: int = 500) -> Iterator[bytes]:
        """What brings the watcher's copy to `revision`: the routes of a full start or the missed changes."""
        if not self.resync:
            backlog, self.backlog = self.backlog, []
            for start in range(0, len(backlog), chunk):
                yield b"".join([logged.line for logged in backlog[start : start + chunk]])
            return
        routes, self.snapshot = self.snapshot, []
        admits, revision = self.filter.admits_route, self.revision
        for start in range(0, len(routes), chunk):
            lines = [route_line(route, revision) for route in routes[start : start + chunk] if admits(route)]
            if lines:
                yield b"".join(lines)


class WatchHub:
    """Every watcher of one table, and the last `log_size` changes for watchers that resume."""

    def __init__(self, table: RouteTable, *, log_size: int = 10_000, buffer_size: int = 1_000) -> None:
        self._table = table
        self._log: deque[Logged] = deque(maxlen=log_size)
        self._buffer_size = buffer_size
        # Each watcher sits in exactly one of these, by the most selective thing it names.
        self._everyone: set[Watcher] = set()
        self._by_host: dict[str, set[Watcher]] = {}
        self._by_vpc: dict[str, set[Watcher]] = {}
        self._count = 0
        table.on_change = self.on_change

    def __len__(self) -> int:
        return self._count

    @property
    def epoch(self) -> str:
        return self._table.epoch

    @property
    def revision(self) -> int:
        return self._table.revision

    def watch(
        self, watch_filter: WatchFilter, wake: Callable[[], None], *, epoch: str | None = None, since: int | None = None
    ) -> Watcher:
        """A new watcher, registered at once: it misses no change applied from now on."""
        table = self._table
        watcher = Watcher(watch_filter, self._buffer_size, wake)
        watcher.revision = table.revision
        replay = self._replay(watch_filter, epoch, since)
        if replay is None:
            watcher.snapshot = table.routes()
        else:
            watcher.resync = False
            watcher.backlog = replay
        self._bucket(watcher).add(watcher)
        self._count += 1
        return watcher

    def stop_watching(self, watcher: Watcher) -> None:
        bucket = self._bucket(watcher)
        if watcher in bucket:
            bucket.remove(watcher)
            self._count -= 1
            self._forget_if_empty(watcher)

    def on_change(self, change: RouteChange) -> None:
        logged = Logged(change)
        self._log.append(logged)
        if not self._count:
            return
        for watcher in self._interested(change):
            if watcher.filter.admits(change) and not watcher.offer(logged):
                self.stop_watching(watcher)

    def _interested(self, change: RouteChange) -> list[Watcher]:
        found = list(self._everyone)
        hosts = {route.host_id for route in (change.route, change.previous) if route is not None}
        vpcs = {route.private_key[0] for route in (change.route, change.previous) if route is not None}
        for host in hosts:
            if host is not None and (bucket := self._by_host.get(host)):
                found.extend(bucket)
        for vpc in vpcs:
            if bucket := self._by_vpc.get(vpc):
                found.extend(bucket)
        return found

    def _replay(self, watch_filter: WatchFilter, epoch: str | None, since: int | None) -> list[Logged] | None:
        """The changes after `since` this watcher wants, or None when it needs the whole table."""
        table = self._table
        if epoch != table.epoch or since is None or since > table.revision:
            return None
        oldest = table.revision - len(self._log) + 1  # the revision of the log's first entry
        if since < oldest - 1:
            return None  # changes after `since` were forgotten
        missed = [
            logged for logged in islice(self._log, since - oldest + 1, None) if watch_filter.admits(logged.change)
        ]
        return missed if len(missed) <= self._buffer_size else None

    def _bucket(self, watcher: Watcher) -> set[Watcher]:
        host, vpc = watcher.filter.host_id, watcher.filter.vpc_id
        if host is not None:
            return self._by_host.setdefault(host, set())
        if vpc is not None:
            return self._by_vpc.setdefault(vpc, set())
        return self._everyone

    def _forget_if_empty(self, watcher: Watcher) -> None:
        host, vpc = watcher.filter.host_id, watcher.filter.vpc_id
        if host is not None and not self._by_host.get(host, True):
            del self._by_host[host]
        elif host is None and vpc is not None and not self._by_vpc.get(vpc, True):
            del self._by_vpc[vpc]


# --- the lines of a watch stream (JSON, one per line) -------------------------------------


def hello_line(epoch: str, watcher: Watcher) -> bytes:
    resync = "true" if watcher.resync else "false"
    return f'{{"type":"hello","epoch":{_quote(epoch)},"revision":{watcher.revision},"resync":{resync}}}\n'.encode()


def route_line(route: HeldRoute, revision: int) -> bytes:
    vpc_id, ip = route.private_key
    eips = ",".join(_quote(eip) for eip in route.eips)
    head = f'{{"type":"route","revision":{revision},"vpc_id":{_quote(vpc_id)},"ip":{_quote(ip)},"eips":[{eips}],'
    # The lookup's answer without its opening brace: one encoding of the owner for both APIs.
    return head.encode() + route.answer[1:] + b"\n"


def removed_line(change: RouteChange) -> bytes:
    return (
        f'{{"type":"removed","revision":{change.revision},"havip_id":{_quote(change.havip_id)},'
        f'"version":{change.version}}}\n'
    ).encode()


def synced_line(revision: int) -> bytes:
    return f'{{"type":"synced","revision":{revision}}}\n'.encode()


def heartbeat_line(revision: int) -> bytes:
    return f'{{"type":"heartbeat","revision":{revision}}}\n'.encode()


def resync_line(reason: str) -> bytes:
    return f'{{"type":"resync","reason":{_quote(reason)}}}\n'.encode()
