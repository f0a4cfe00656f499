from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from schemas.errors import HaVipError
from schemas.messages import HaVipMappingChanged, HaVipStatus, MappedEip, Route
from services.forwarder.routes import HeldRoute, RouteChange, RouteState, RouteTable, canonical_ip

OWNER_A = Route(instance_id="i-a", eni_id=None, private_ip="10.0.0.11", host_id="host-1")
OWNER_B = Route(instance_id="i-b", eni_id="eni-b", private_ip="10.0.0.12", host_id="host-2")


def seen(route: HeldRoute | None) -> tuple[str, int, Route | None] | None:
    """What a lookup answers: (havip_id, version, owner), decoded from the answer bytes."""
    return None if route is None else (route.havip_id, route.version, route.owner)


def mapping(version: int, *, eip_address: str | None = None, **changes: Any) -> HaVipMappingChanged:
    fields: dict[str, Any] = dict(
        havip_id="havip-1",
        tenant_id="tenant-1",
        vpc_id="vpc-1",
        vswitch_id="vsw-1",
        ip_address="10.0.0.100",
        eips=[MappedEip(eip_id="eip-1", ip_address=eip_address)] if eip_address is not None else [],
        status=HaVipStatus.IN_USE,
        owner=OWNER_A,
        version=version,
    )
    fields.update(changes)
    return HaVipMappingChanged(**fields)


def test_a_miss_answers_none() -> None:
    table = RouteTable()
    assert table.lookup("vpc-1", "10.0.0.100") is None
    assert table.lookup_public("203.0.113.7") is None
    assert len(table) == 0


def test_a_mapping_answers_its_owner_by_vpc_and_ip() -> None:
    table = RouteTable()
    first = mapping(1)
    assert table.apply(first) is True
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 1, OWNER_A)
    assert table.lookup("vpc-2", "10.0.0.100") is None  # the same IP in another VPC is another address
    assert table.lookup("vpc-1", "10.0.0.101") is None
    assert len(table) == 1
    held = table.get("havip-1")
    assert held is not None and (held.version, held.vpc_id, held.ip, held.eips) == (1, "vpc-1", "10.0.0.100", ())


def test_a_newer_version_replaces_the_owner() -> None:
    table = RouteTable()
    table.apply(mapping(1))
    assert table.apply(mapping(2, owner=OWNER_B)) is True
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 2, OWNER_B)


def test_an_older_or_equal_version_changes_nothing() -> None:
    table = RouteTable()
    table.apply(mapping(5, owner=OWNER_B))
    assert table.apply(mapping(4, owner=OWNER_A)) is False
    assert table.apply(mapping(5, owner=OWNER_A)) is False  # same version, different content: first wins
    assert table.apply(mapping(1, ip_address="10.0.0.200")) is False
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 5, OWNER_B)
    assert table.lookup("vpc-1", "10.0.0.200") is None


def test_a_replay_of_the_whole_history_changes_nothing() -> None:
    table = RouteTable()
    history = [mapping(v, owner=OWNER_A if v % 2 else OWNER_B) for v in range(1, 8)]
    for record in history:
        table.apply(record)
    assert [table.apply(record) for record in history] == [False] * len(history)
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 7, OWNER_A)


def test_out_of_order_delivery_ends_at_the_newest_version() -> None:
    history = [mapping(v, owner=OWNER_A if v % 2 else OWNER_B, ip_address=f"10.0.0.{100 + v}") for v in range(1, 30)]
    rng = random.Random(7)
    for _ in range(20):
        shuffled = history[:]
        rng.shuffle(shuffled)
        table = RouteTable()
        for record in shuffled:
            table.apply(record)
        assert seen(table.lookup("vpc-1", "10.0.0.129")) == ("havip-1", 29, OWNER_A)
        # only the newest address answers: no stale entry survives
        assert [v for v in range(1, 29) if table.lookup("vpc-1", f"10.0.0.{100 + v}")] == []


def test_a_havip_without_owner_is_found_with_owner_none() -> None:
    table = RouteTable()
    table.apply(mapping(1, owner=None, status=HaVipStatus.AVAILABLE))
    answer = table.lookup("vpc-1", "10.0.0.100")
    assert seen(answer) == ("havip-1", 1, None)  # a hit: the address is held, traffic is dropped
    table.apply(mapping(2, owner=OWNER_A))
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 2, OWNER_A)
    table.apply(mapping(3, owner=None))
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 3, None)


def test_deleted_leaves_the_indexes_and_an_older_record_cannot_resurrect_it() -> None:
    table = RouteTable()
    table.apply(mapping(1, eip_address="203.0.113.7"))
    assert table.apply(mapping(2, status=HaVipStatus.DELETED, owner=None)) is True
    assert table.lookup("vpc-1", "10.0.0.100") is None
    assert table.lookup_public("203.0.113.7") is None
    assert table.get("havip-1") is None
    assert len(table) == 0
    assert table.version_of("havip-1") == 2

    assert table.apply(mapping(1, eip_address="203.0.113.7")) is False
    assert table.lookup("vpc-1", "10.0.0.100") is None
    assert table.lookup_public("203.0.113.7") is None


def test_a_delete_that_arrives_first_still_wins_over_older_records() -> None:
    table = RouteTable()
    assert table.apply(mapping(3, status=HaVipStatus.DELETED, owner=None)) is True
    assert table.apply(mapping(2)) is False
    assert table.lookup("vpc-1", "10.0.0.100") is None


def test_a_newer_version_after_delete_brings_the_havip_back() -> None:
    # Versions only grow, so a newer record is authoritative even after a Deleted one.
    table = RouteTable()
    table.apply(mapping(1))
    table.apply(mapping(2, status=HaVipStatus.DELETED, owner=None))
    assert table.apply(mapping(3)) is True
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 3, OWNER_A)


def test_an_ip_change_removes_the_old_entry() -> None:
    table = RouteTable()
    table.apply(mapping(1))
    table.apply(mapping(2, ip_address="10.0.0.101"))
    assert table.lookup("vpc-1", "10.0.0.100") is None
    assert seen(table.lookup("vpc-1", "10.0.0.101")) == ("havip-1", 2, OWNER_A)


def test_a_vpc_change_removes_the_old_entry() -> None:
    table = RouteTable()
    table.apply(mapping(1))
    table.apply(mapping(2, vpc_id="vpc-2"))
    assert table.lookup("vpc-1", "10.0.0.100") is None
    assert seen(table.lookup("vpc-2", "10.0.0.100")) == ("havip-1", 2, OWNER_A)


def test_an_eip_resolves_through_its_havip_and_follows_changes() -> None:
    table = RouteTable()
    table.apply(mapping(1))
    assert table.lookup_public("203.0.113.7") is None

    table.apply(mapping(2, eip_address="203.0.113.7"))
    assert seen(table.lookup_public("203.0.113.7")) == ("havip-1", 2, OWNER_A)

    table.apply(mapping(3, eip_address="203.0.113.7", owner=OWNER_B))
    assert seen(table.lookup_public("203.0.113.7")) == ("havip-1", 3, OWNER_B)

    table.apply(mapping(4, eip_address="203.0.113.8", owner=OWNER_B))
    assert table.lookup_public("203.0.113.7") is None
    assert seen(table.lookup_public("203.0.113.8")) == ("havip-1", 4, OWNER_B)

    table.apply(mapping(5, eip_address=None, owner=OWNER_B))
    assert table.lookup_public("203.0.113.8") is None
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 5, OWNER_B)


def test_havips_are_independent() -> None:
    table = RouteTable()
    table.apply(mapping(7, havip_id="havip-1"))
    table.apply(mapping(1, havip_id="havip-2", ip_address="10.0.0.200", owner=OWNER_B))
    # a low version of another HAVIP is not "older"
    assert seen(table.lookup("vpc-1", "10.0.0.200")) == ("havip-2", 1, OWNER_B)
    table.apply(mapping(8, havip_id="havip-1", status=HaVipStatus.DELETED, owner=None))
    assert seen(table.lookup("vpc-1", "10.0.0.200")) == ("havip-2", 1, OWNER_B)
    assert len(table) == 1


def test_an_address_handed_over_between_havips_is_not_removed_by_the_old_holder() -> None:
    # havip-2 takes 10.0.0.100 (its record applied first, e.g. from another
    # partition), then havip-1's delete arrives: havip-2 must keep the address.
    table = RouteTable()
    table.apply(mapping(1, havip_id="havip-1", eip_address="203.0.113.7"))
    table.apply(mapping(1, havip_id="havip-2", owner=OWNER_B, eip_address="203.0.113.7"))
    table.apply(mapping(2, havip_id="havip-1", status=HaVipStatus.DELETED, owner=None))
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-2", 1, OWNER_B)
    assert seen(table.lookup_public("203.0.113.7")) == ("havip-2", 1, OWNER_B)


def test_addresses_are_indexed_in_canonical_form() -> None:
    table = RouteTable()
    table.apply(mapping(1, ip_address="10.0.0.100", eip_address="203.0.113.7"))
    assert table.lookup("vpc-1", canonical_ip("10.0.0.100")) is not None
    assert table.lookup_public(canonical_ip("203.0.113.7")) is not None
    with pytest.raises(HaVipError):  # one parser for every service: padding is not an address
        table.apply(mapping(2, ip_address=" 10.0.0.100"))


@pytest.mark.parametrize("field", ["ip_address", "eip_address"])
def test_a_mapping_with_a_bad_address_is_refused_and_changes_nothing(field: str) -> None:
    table = RouteTable()
    table.apply(mapping(1))
    with pytest.raises(HaVipError):
        table.apply(mapping(2, owner=OWNER_B, **{field: "not-an-ip"}))
    assert seen(table.lookup("vpc-1", "10.0.0.100")) == ("havip-1", 1, OWNER_A)
    assert table.version_of("havip-1") == 1


def test_every_eip_of_a_havip_follows_its_owner_in_the_same_update() -> None:
    table = RouteTable()
    two = [MappedEip(eip_id="eip-1", ip_address="203.0.113.7"), MappedEip(eip_id="eip-2", ip_address="203.0.113.8")]
    table.apply(mapping(1, eips=two))
    table.apply(mapping(2, eips=two, owner=OWNER_B))
    for ip in ("203.0.113.7", "203.0.113.8"):
        assert seen(table.lookup_public(ip)) == ("havip-1", 2, OWNER_B)
    assert table.lookup_public("203.0.113.8") is table.lookup("vpc-1", "10.0.0.100")
    table.apply(mapping(3, eips=two[:1], owner=OWNER_B))
    assert table.lookup_public("203.0.113.8") is None
    table.apply(mapping(4, eips=two[:1], status=HaVipStatus.DELETED))
    assert table.lookup_public("203.0.113.7") is None


def test_a_newer_version_builds_a_new_route_and_leaves_the_old_one_as_it_was() -> None:
    # A batch or a watcher may hold a route across an await: it must not change under it.
    table = RouteTable()
    table.apply(mapping(1))
    old = table.lookup("vpc-1", "10.0.0.100")
    table.apply(mapping(2, owner=OWNER_B))
    assert old is not None and seen(old) == ("havip-1", 1, OWNER_A)
    assert table.lookup("vpc-1", "10.0.0.100") is not old
    with pytest.raises(AttributeError):
        old.mapping = None  # type: ignore[attr-defined]  # slots: nothing else rides along


@pytest.mark.parametrize(
    "owner",
    [OWNER_A, OWNER_B, None, Route(instance_id='i-"quoted"\\', eni_id="eni-é", private_ip="10.0.0.9", host_id="hôte")],
)
def test_the_answer_is_the_json_the_api_always_answered(owner: Route | None) -> None:
    table = RouteTable()
    table.apply(mapping(3, owner=owner))
    route = table.lookup("vpc-1", "10.0.0.100")
    assert route is not None
    expected = {
        "havip_id": "havip-1",
        "version": 3,
        "instance_id": owner.instance_id if owner else None,
        "eni_id": owner.eni_id if owner else None,
        "private_ip": owner.private_ip if owner else None,
        "host_id": owner.host_id if owner else None,
    }
    # byte for byte what Starlette's JSONResponse made of the dict
    assert route.answer == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()


def test_a_state_from_the_snapshot_and_the_same_record_give_the_same_route() -> None:
    from_record, from_row = RouteTable(), RouteTable()
    from_record.apply(mapping(4, owner=OWNER_B, eip_address="203.0.113.7"))
    row = RouteState(
        "havip-1", 4, "vpc-1", "10.0.0.100", ("203.0.113.7",), False, "i-b", "eni-b", "10.0.0.12", "host-2"
    )
    assert from_row.apply_state(row) is True
    a, b = from_record.lookup_public("203.0.113.7"), from_row.lookup_public("203.0.113.7")
    assert a is not None and b is not None and a.answer == b.answer and a.host_id == b.host_id == "host-2"


def test_every_change_is_numbered_and_told_with_where_the_route_was() -> None:
    table = RouteTable()
    changes: list[RouteChange] = []
    table.on_change = changes.append
    table.apply(mapping(1))
    table.apply(mapping(1))  # not newer: no change, no revision
    table.apply(mapping(2, owner=OWNER_B))
    table.apply(mapping(3, status=HaVipStatus.DELETED, owner=None))
    assert table.revision == 3
    assert [(c.revision, c.version) for c in changes] == [(1, 1), (2, 2), (3, 3)]
    first, moved, deleted = changes
    assert first.previous is None and first.route is not None and first.route.host_id == "host-1"
    assert moved.previous is first.route and moved.route is not None and moved.route.host_id == "host-2"
    assert deleted.route is None and deleted.previous is moved.route
    assert len(table.epoch) == 32 and table.epoch != RouteTable().epoch  # a new sequence in every process


def test_a_lookup_takes_microseconds_in_a_large_table() -> None:
    table = RouteTable()

    def address(n: int) -> tuple[str, str]:
        return f"vpc-{n % 50}", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"

    for n in range(50_000):
        vpc, ip = address(n)
        table.apply(mapping(1, havip_id=f"havip-{n}", vpc_id=vpc, ip_address=ip))
    keys = [address(n) for n in range(0, 50_000, 7)]
    started = time.perf_counter()
    for _ in range(10):
        for vpc, ip in keys:
            assert table.lookup(vpc, ip) is not None
    per_lookup = (time.perf_counter() - started) / (10 * len(keys))
    assert per_lookup < 20e-6, f"{per_lookup * 1e6:.1f} µs per lookup"
