"""The watch hub without I/O: positions, filters, ordering and the bounded buffers."""

from __future__ import annotations

import json
from typing import Any

from services.forwarder.routes import RouteState, RouteTable
from services.forwarder.watch import Watcher, WatchFilter, WatchHub, hello_line


def state(havip: int, version: int, *, host: str | None = "host-1", vpc: str = "vpc-1", **changes: Any) -> RouteState:
    fields: dict[str, Any] = dict(
        havip_id=f"havip-{havip}",
        version=version,
        vpc_id=vpc,
        ip=f"10.0.0.{havip}",
        eips=(),
        deleted=False,
        instance_id=f"i-{havip}" if host else None,
        eni_id=None,
        private_ip="10.0.1.1" if host else None,
        host_id=host,
    )
    fields.update(changes)
    return RouteState(**fields)


class Woken:
    def __init__(self) -> None:
        self.times = 0

    def __call__(self) -> None:
        self.times += 1


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def start(watcher: Watcher) -> list[dict[str, Any]]:
    return lines(b"".join(watcher.start_lines(chunk=2)))


def setup(*, log_size: int = 100, buffer_size: int = 10) -> tuple[RouteTable, WatchHub]:
    table = RouteTable()
    return table, WatchHub(table, log_size=log_size, buffer_size=buffer_size)


def test_a_new_watcher_gets_the_whole_filtered_table_then_every_change_in_order() -> None:
    table, hub = setup()
    table.apply_state(state(1, 1, host="host-1"))
    table.apply_state(state(2, 1, host="host-2"))
    table.apply_state(state(3, 1, host="host-1", vpc="vpc-2"))
    woken = Woken()
    watcher = hub.watch(WatchFilter(host_id="host-1"), woken)
    assert watcher.resync and watcher.revision == 3 and len(hub) == 1
    hello = json.loads(hello_line(hub.epoch, watcher))
    assert hello == {"type": "hello", "epoch": table.epoch, "revision": 3, "resync": True}
    assert [(line["havip_id"], line["revision"]) for line in start(watcher)] == [("havip-1", 3), ("havip-3", 3)]

    table.apply_state(state(1, 2, host="host-1"))
    table.apply_state(state(2, 2, host="host-2"))  # another host: not sent
    table.apply_state(state(3, 2, host="host-1", deleted=True))
    sent = lines(watcher.take())
    assert [(line["type"], line["havip_id"], line["revision"]) for line in sent] == [
        ("route", "havip-1", 4),
        ("removed", "havip-3", 6),
    ]
    assert woken.times == 1  # once per batch of waiting changes, not once per change
    assert watcher.take() == b""


def test_a_route_line_carries_the_addresses_and_the_lookup_answer() -> None:
    table, hub = setup()
    watcher = hub.watch(WatchFilter(), Woken())
    table.apply_state(state(7, 4, eips=("203.0.113.7",), eni_id="eni-7"))
    [line] = lines(watcher.take())
    route = table.lookup("vpc-1", "10.0.0.7")
    assert route is not None
    assert line == {
        "type": "route",
        "revision": 1,
        "vpc_id": "vpc-1",
        "ip": "10.0.0.7",
        "eips": ["203.0.113.7"],
        **json.loads(route.answer),
    }
    assert line["eni_id"] == "eni-7" and line["host_id"] == "host-1"


def test_a_route_that_leaves_a_watched_host_or_vpc_is_sent_once_more() -> None:
    table, hub = setup()
    table.apply_state(state(1, 1, host="host-1"))
    on_host = hub.watch(WatchFilter(host_id="host-1"), Woken())
    in_vpc = hub.watch(WatchFilter(vpc_id="vpc-1"), Woken())
    both = hub.watch(WatchFilter(vpc_id="vpc-1", host_id="host-1"), Woken())
    table.apply_state(state(1, 2, host="host-2"))  # failover to another host
    table.apply_state(state(1, 3, host=None))  # and then no owner at all
    table.apply_state(state(1, 4, host="host-2", vpc="vpc-9"))  # and another VPC
    assert [(x["version"], x["host_id"]) for x in lines(on_host.take())] == [(2, "host-2")]
    assert [(x["version"], x["vpc_id"]) for x in lines(in_vpc.take())] == [(2, "vpc-1"), (3, "vpc-1"), (4, "vpc-9")]
    assert [x["version"] for x in lines(both.take())] == [2]


def test_a_watcher_resumes_from_its_position_with_only_what_it_missed() -> None:
    table, hub = setup()
    for havip in (1, 2, 3):
        table.apply_state(state(havip, 1, host=f"host-{havip}"))
    position = table.revision
    table.apply_state(state(1, 2, host="host-1"))
    table.apply_state(state(2, 2, host="host-2"))
    table.apply_state(state(1, 3, host="host-1"))

    watcher = hub.watch(WatchFilter(host_id="host-1"), Woken(), epoch=table.epoch, since=position)
    assert not watcher.resync and watcher.revision == 6
    assert [(x["version"], x["revision"]) for x in start(watcher)] == [(2, 4), (3, 6)]
    up_to_date = hub.watch(WatchFilter(), Woken(), epoch=table.epoch, since=table.revision)
    assert not up_to_date.resync and start(up_to_date) == []


def test_another_epoch_an_unknown_or_a_forgotten_position_gets_the_whole_table() -> None:
    table, hub = setup(log_size=3)
    for version in range(1, 6):
        table.apply_state(state(1, version))
    assert hub.watch(WatchFilter(), Woken(), epoch="0" * 32, since=5).resync  # the forwarder restarted
    assert hub.watch(WatchFilter(), Woken(), epoch=table.epoch, since=9).resync  # a position it never gave
    assert hub.watch(WatchFilter(), Woken(), epoch=table.epoch, since=None).resync
    assert hub.watch(WatchFilter(), Woken(), epoch=table.epoch, since=1).resync  # 2 was forgotten
    resumed = hub.watch(WatchFilter(), Woken(), epoch=table.epoch, since=2)  # 3, 4 and 5 are remembered
    assert not resumed.resync and [x["version"] for x in start(resumed)] == [3, 4, 5]
    full = hub.watch(WatchFilter(), Woken())
    assert [x["version"] for x in start(full)] == [5]


def test_a_backlog_longer_than_the_buffer_is_a_resync() -> None:
    table, hub = setup(log_size=100, buffer_size=3)
    for version in range(1, 6):
        table.apply_state(state(1, version))
    assert hub.watch(WatchFilter(), Woken(), epoch=table.epoch, since=1).resync
    assert not hub.watch(WatchFilter(), Woken(), epoch=table.epoch, since=2).resync


def test_a_stalled_watcher_is_dropped_and_told_to_resync_while_others_go_on() -> None:
    table, hub = setup(buffer_size=3)
    stalled_woken, stalled = Woken(), None
    stalled = hub.watch(WatchFilter(), stalled_woken)
    reader = hub.watch(WatchFilter(), Woken())
    for version in range(1, 5):
        table.apply_state(state(1, version))
        assert [x["version"] for x in lines(reader.take())] == [version]
    assert stalled.overflowed and stalled.take() == b""  # its buffer is dropped, not kept growing
    assert stalled_woken.times == 2  # woken for the first change, and to hear it must resync
    assert len(hub) == 1
    table.apply_state(state(1, 5))
    assert [x["version"] for x in lines(reader.take())] == [5]
    hub.stop_watching(stalled)  # the stream's end: harmless after the hub dropped it
    hub.stop_watching(reader)
    assert len(hub) == 0


def test_changes_are_remembered_without_watchers_and_lines_are_encoded_once() -> None:
    table, hub = setup()
    table.apply_state(state(1, 1))
    first, second = hub.watch(WatchFilter(), Woken()), hub.watch(WatchFilter(), Woken())
    table.apply_state(state(1, 2))
    a, b = first.take(), second.take()
    assert a == b and lines(a)[0]["version"] == 2
    late = hub.watch(WatchFilter(), Woken(), epoch=table.epoch, since=0)
    assert [x["version"] for x in start(late)] == [1, 2]
