"""The observe bench's pure parts: the adverts it generates, their schedule, and how it reads what was measured."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from services.dev.bench_observe import (
    HOST_ID,
    Plan,
    packet_socket_drops,
    schedule,
    sent_by,
    vrrp_advert,
)
from services.observe.frames import VrrpAdvert, read_frame
from services.observe.hostview import HostView, Standing


def test_an_advert_reads_back_as_the_vrrp_advert_it_was_meant_to_be() -> None:
    frame = vrrp_advert(
        vrid=42,
        priority=100,
        address=IPv4Address("10.128.0.9"),
        interval=1,
        src_mac="02:b0:00:00:00:01",
        dst_mac="02:b0:00:00:00:02",
        src_ip=IPv4Address("10.0.1.1"),
        dst_ip=IPv4Address("10.0.1.2"),
    )
    assert len(frame) == 60  # padded to Ethernet's minimum, as on the wire
    assert frame[:12] == bytes.fromhex("02b00000000202b000000001")
    assert frame[14 + 8] == 255  # TTL
    assert read_frame(frame) == VrrpAdvert(
        version=2,
        vrid=42,
        priority=100,
        interval_seconds=1.0,
        addresses=(IPv4Address("10.128.0.9"),),
        source_ip=IPv4Address("10.0.1.1"),
    )


def test_every_havip_advertises_its_own_address_from_its_instance() -> None:
    plan = Plan(havips=12, per_instance=5)
    assert plan.instances == 3
    for j in range(plan.havips):
        seen = read_frame(plan.advert(j))
        assert isinstance(seen, VrrpAdvert)
        k = plan.instance_of(j)
        assert seen.addresses == (plan.havip_ip(j),)
        assert (seen.vrid, seen.priority, seen.interval_seconds) == (j % 255 + 1, 100, 1.0)
        assert seen.source_ip == plan.instance_ip(k)
    # An instance's HAVIPs have VRIDs of their own.
    for k in range(plan.instances):
        vrids = [plan.vrid(j) for j in range(plan.havips) if plan.instance_of(j) == k]
        assert len(vrids) == len(set(vrids)) <= 5


def test_the_inventory_and_mappings_make_every_advert_a_claimants() -> None:
    plan = Plan(havips=1000, per_instance=5)
    view = HostView(HOST_ID)
    for _, record in plan.inventory(revision=1):
        view.apply_inventory(record)  # type: ignore[arg-type]  # Plan.inventory(): records only
    for j in range(plan.havips):
        view.apply_mapping(plan.mapping(j, version=1))
    ports = view.ports()
    assert len(ports) == plan.instances == 200
    for j in range(plan.havips):
        port = ports[plan.port(plan.instance_of(j))]
        assert view.judge(port, plan.havip_ip(j)).standing is Standing.CLAIMANT


def test_the_veths_are_made_in_two_batches() -> None:
    host, guests = Plan(havips=10, per_instance=5).batch_lines("ns-guests")
    assert host == [
        "link add b1 type veth peer name g1 address 02:b0:00:00:00:00 netns ns-guests",
        "link add b2 type veth peer name g2 address 02:b0:00:00:00:01 netns ns-guests",
        "link set b1 up",
        "link set b2 up",
    ]
    assert guests == ["link set lo up", "link set g1 up", "link set g2 up"]


def test_the_schedule_spreads_the_adverts_evenly_over_the_second() -> None:
    offsets = schedule(1000)
    assert len(offsets) == 1000
    assert offsets[0] == 0
    assert offsets[-1] < 1.0
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.001) and max(gaps) == pytest.approx(0.001)
    # Any tenth of a second holds a tenth of the adverts.
    assert sum(1 for t in offsets if 0.3 <= t < 0.4) == 100


@pytest.mark.parametrize("havips, per_instance", [(0, 5), (10, 0), (10, 256)])
def test_a_plan_refuses_what_cannot_be_generated(havips: int, per_instance: int) -> None:
    with pytest.raises(ValueError):
        Plan(havips, per_instance)


def test_sent_by_interpolates_between_the_generators_lines() -> None:
    progress = [(10.0, 0), (10.1, 100), (10.2, 200)]
    assert sent_by(progress, 10.05) == pytest.approx(50)
    assert sent_by(progress, 9.0) == 0
    assert sent_by(progress, 11.0) == 200
    assert sent_by([], 10.0) == 0


def test_kernel_drops_are_read_from_ss() -> None:
    output = (
        "Netid Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n"
        "p_raw 0      0                  *:b1               *\n"
        "\t skmem:(r0,rb2097152,t0,tb212992,f0,w0,o0,bl0,d0)\n"
        "p_raw 0      0                  *:b2               *\n"
        "\t skmem:(r0,rb2097152,t0,tb212992,f0,w0,o0,bl0,d7)\n"
    )
    assert packet_socket_drops(output) == (2, 7)
