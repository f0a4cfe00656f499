"""The pure parts of `havip bench watch`: reading watch lines, undoing chunked coding, the delay arithmetic."""

from __future__ import annotations

import asyncio

import pytest

from schemas import topics
from services.dev.bench_watch import bench_change
from services.dev.bench_watchers import ChunkedBody, Tally, Watch, change_key
from services.dev.watch_clients import shares
from services.dev.watch_delays import (
    ProducedChange,
    applied_position,
    change_delays,
    merge_receipts,
    per_watcher_ms,
    summarise,
)
from services.forwarder.routes import RouteChange, RouteState, RouteTable
from services.forwarder.watch import Logged, heartbeat_line, synced_line


def applied_lines(*states: RouteState) -> list[bytes]:
    """The watch lines the forwarder sends for these states, as its table applies them."""
    table, changes = RouteTable(), []

    def keep(change: RouteChange) -> None:
        changes.append(change)

    table.on_change = keep
    for state in states:
        table.apply_state(state)
    return [Logged(change).line for change in changes]


def state(version: int, *, deleted: bool = False) -> RouteState:
    return RouteState(
        "havip-7", version, "vpc-bench", "10.128.0.7", ("203.0.113.7",), deleted, "i-14", None, "10.0.0.14", "host-14"
    )


def test_change_lines_are_known_by_havip_and_version() -> None:
    route, removed = applied_lines(state(3), state(4, deleted=True))
    assert change_key(route.rstrip(b"\n")) == ("havip-7", 3)
    assert change_key(removed.rstrip(b"\n")) == ("havip-7", 4)
    assert change_key(synced_line(9).rstrip(b"\n")) is None
    assert change_key(heartbeat_line(9).rstrip(b"\n")) is None
    assert change_key(b'{"type":"hello","epoch":"e","revision":1,"resync":false}') is None


def chunked(*pieces: bytes, last: bool = False) -> bytes:
    """Pieces as chunks on the wire; `last` adds the empty chunk that ends the body."""
    wire = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
    return wire + b"0\r\n\r\n" if last else wire


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_chunked_body_is_undone_however_the_bytes_are_cut(step: int) -> None:
    pieces = [b'{"a":1}\n', b"x" * 300, b'{"b":2}\n{"c":3}\n']
    wire = chunked(*pieces, last=True)
    body = ChunkedBody()
    got = b"".join(body.feed(wire[i : i + step]) for i in range(0, len(wire), step))
    assert got == b"".join(pieces)
    assert body.finished


def test_chunk_sizes_are_hex_and_extensions_ignored() -> None:
    body = ChunkedBody()
    assert body.feed(b"1A;name=v\r\n" + b"y" * 26 + b"\r\n") == b"y" * 26
    assert not body.finished


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += bytes(data)

    def close(self) -> None:
        self.closed = True


async def test_a_watch_keeps_the_first_time_it_saw_each_change() -> None:
    receipts: dict[tuple[str, int], list[float]] = {}
    tally = Tally()
    watch = Watch(b"GET /v1/routes:watch HTTP/1.1\r\n\r\n", receipts, tally)
    transport = FakeTransport()
    watch.connection_made(transport)
    assert transport.sent.startswith(b"GET /v1/routes:watch")
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    hello = b'{"type":"hello","epoch":"e","revision":5,"resync":false}\n'
    route, again = applied_lines(state(3), state(4))
    wire = head + chunked(hello, synced_line(5), route[:20])
    watch.data_received(wire)
    assert watch.synced.done() and receipts == {}
    watch.data_received(chunked(route[20:], heartbeat_line(6)))
    assert list(receipts) == [("havip-7", 3)] and len(receipts[("havip-7", 3)]) == 1
    watch.data_received(chunked(again))
    assert (tally.changes, tally.heartbeats) == (2, 1)
    assert list(receipts) == [("havip-7", 3), ("havip-7", 4)]


async def test_a_refused_watch_fails_its_wait() -> None:
    watch = Watch(b"GET / HTTP/1.1\r\n\r\n", {}, Tally())
    watch.connection_made(FakeTransport())
    watch.data_received(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}")
    with pytest.raises(RuntimeError, match="refused"):
        await watch.synced


def test_watchers_are_shared_evenly_over_the_processes() -> None:
    assert shares(1000, 3) == [334, 333, 333]
    assert shares(100, 2) == [50, 50]
    assert shares(2, 4) == [1, 1]


def test_receipts_of_every_process_merge_per_change() -> None:
    merged = merge_receipts([[("havip-1", 3, [1.0, 2.0])], [("havip-1", 3, [1.5]), ("havip-2", 3, [2.5])]])
    assert merged == {("havip-1", 3): [1.0, 2.0, 1.5], ("havip-2", 3): [2.5]}


def test_a_change_s_delay_runs_from_its_apply_to_the_last_watcher_having_it() -> None:
    produced = [
        ProducedChange(("havip-1", 3), produced_at=10.000, applied_at=10.010),
        ProducedChange(("havip-2", 3), produced_at=11.000, applied_at=None),  # /metrics could not date it
        ProducedChange(("havip-3", 3), produced_at=12.000, applied_at=12.005),  # nobody had it
    ]
    receipts = {("havip-1", 3): [10.030, 10.012, 10.020], ("havip-2", 3): [11.050, 11.040]}
    one, two, three = change_delays(produced, receipts, watchers=3)
    assert one.had_it == 3 and one.share == 1.0
    assert one.to_last_ms == pytest.approx(20.0)
    assert one.produced_to_last_ms == pytest.approx(30.0)
    assert one.first_to_last_ms == pytest.approx(18.0)
    assert two.to_last_ms is None and two.first_to_last_ms == pytest.approx(10.0)
    assert two.share == pytest.approx(2 / 3)
    assert (three.had_it, three.share, three.to_last_ms, three.first_to_last_ms) == (0, 0.0, None, None)
    each = per_watcher_ms(produced, receipts)
    assert sorted(each) == pytest.approx([2.0, 10.0, 20.0])  # only the dated change counts

    summary = summarise([one, two, three], each, watchers=3)
    assert summary["changes_applied_at_known"] == 2
    assert summary["changes_every_watcher_had"] == 1
    assert summary["share_of_watchers_min"] == 0.0
    assert summary["applied_to_last_watcher_ms"]["count"] == 1
    assert summary["applied_to_each_watcher_ms"]["p50"] == pytest.approx(10.0)
    assert summary["first_to_last_watcher_ms"]["count"] == 2


def test_the_last_apply_is_read_from_the_forwarder_metrics() -> None:
    text = (
        "# HELP havip_forwarder_records_applied_total Mapping records that changed the route table\n"
        'havip_forwarder_records_applied_total{source="snapshot"} 10000.0\n'
        'havip_forwarder_records_applied_total{source="stream"} 42.0\n'
        "havip_forwarder_apply_lag_seconds 0.0123\n"
        "havip_forwarder_apply_lag_seconds_other 9\n"
    )
    assert applied_position(text) == (42, 0.0123)
    assert applied_position("") == (0, None)


def test_each_bench_change_moves_its_havip_to_the_other_instance() -> None:
    first, back = bench_change(5, havips=10, version=100), bench_change(15, havips=10, version=101)
    assert (first.havip_id, first.version, back.havip_id) == ("havip-5", 100, "havip-5")
    assert first.owner is not None and back.owner is not None
    assert (first.owner.instance_id, back.owner.instance_id) == ("i-11", "i-10")
    assert (first.owner.private_ip, first.owner.host_id) == ("10.0.0.11", "host-11")
    assert topics.MAPPINGS.parse(topics.encode(first)) == first  # a record the forwarder accepts
    table = RouteTable()
    assert table.apply(first) and table.lookup("vpc-bench", "10.128.0.5") is not None
