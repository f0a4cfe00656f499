"""services.observe.capture on a real port: a veth pair between a "host" and a "node" network namespace.

The socket is opened from the test's own namespace into the host one, as `havip observe` opens an
instance's port. The node plays the instance: what it sends must arrive (VRRP and gratuitous ARP
only, the rest is filtered in the kernel), and what the host sends toward it must never.
Needs root and iproute2; no keepalived, no broker, no database.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest

from services.dev.keepalived_lab import (
    NAMESPACE_PREFIX,
    _destroy_namespace,
    _ip,
    namespaces_unavailable_reason,
    wait_until,
)
from services.observe import capture
from services.observe.capture import PortUnavailable, open_port, receive
from services.observe.frames import GratuitousArp, VrrpAdvert, internet_checksum, read_frame
from tests.unit.test_observe_frames import BROADCAST, arp, ethernet, ipv4, vrrp

pytestmark = pytest.mark.integration

PORT = "port0"  # the host's end of the veth, as an instance's tap would be
NODE_INTERFACE = "eth0"
NODE_IP = "192.0.2.10"
HOST_SIDE_IP = "192.0.2.1"  # not configured anywhere: the node has a static neighbour entry for it
TIMEOUT = 5.0


_UNAVAILABLE = namespaces_unavailable_reason()
# CI runs as root with iproute2: there a missing prerequisite is a failure, never a silent skip.
if _UNAVAILABLE is not None and os.environ.get("CI") != "true":
    pytest.skip(_UNAVAILABLE, allow_module_level=True)

# Run with `ip netns exec`: sends what the arguments say, from inside a namespace.
_SEND = """
import socket, sys
kind, *args = sys.argv[1:]
if kind == "frames":  # interface, then whole Ethernet frames in hex
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((args[0], 0))
        for frame in args[1:]:
            s.send(bytes.fromhex(frame))
elif kind == "ip":  # protocol, source, destination, payload in hex: the kernel writes the IPv4 header
    protocol, source, destination, payload = args
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, int(protocol)) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        s.sendto(bytes.fromhex(payload), (destination, 0))
elif kind == "udp":  # destination
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"not for observe", (args[0], 9))
"""


@dataclass(frozen=True)
class Link:
    host: str  # the namespace holding PORT
    node: str  # the namespace holding NODE_INTERFACE, with NODE_IP

    def send(self, namespace: str, *args: str) -> None:
        _ip("netns", "exec", namespace, sys.executable, "-c", _SEND, *args)

    def send_frames(self, namespace: str, interface: str, *frames: bytes) -> None:
        self.send(namespace, "frames", interface, *(frame.hex() for frame in frames))

    def port_counters(self) -> tuple[int, int]:
        """(rx, tx) packets of PORT, as the host sees it."""
        (link,) = json.loads(_ip("-n", self.host, "-s", "-j", "link", "show", PORT))
        return link["stats64"]["rx"]["packets"], link["stats64"]["tx"]["packets"]


def _up(namespace: str, interface: str) -> bool:
    (link,) = json.loads(_ip("-n", namespace, "-j", "link", "show", interface))
    return bool(link["operstate"] == "UP")


@pytest.fixture
def link() -> Iterator[Link]:
    if _UNAVAILABLE is not None:
        pytest.fail(f"capture test unavailable in CI: {_UNAVAILABLE}", pytrace=False)
    # The lab's prefix with our pid: a run killed before cleaning up is swept by the next lab.
    stem = f"{NAMESPACE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    created = Link(host=f"{stem}-host", node=f"{stem}-node")
    try:
        _ip("netns", "add", created.host)
        _ip("netns", "add", created.node)
        veth = (PORT, "type", "veth", "peer", "name", NODE_INTERFACE, "netns", created.node)
        _ip("-n", created.host, "link", "add", *veth)
        _ip("-n", created.host, "link", "set", PORT, "up")
        _ip("-n", created.node, "link", "set", "lo", "up")
        _ip("-n", created.node, "addr", "add", f"{NODE_IP}/24", "dev", NODE_INTERFACE)
        _ip("-n", created.node, "link", "set", NODE_INTERFACE, "up")
        (port,) = json.loads(_ip("-n", created.host, "-j", "link", "show", PORT))
        # No ARP when the node sends IP to the host side: only the frames a test sends cross the link.
        neighbour = (HOST_SIDE_IP, "lladdr", port["address"], "dev", NODE_INTERFACE, "nud", "permanent")
        _ip("-n", created.node, "neigh", "replace", *neighbour)
        wait_until(lambda: _up(created.host, PORT) and _up(created.node, NODE_INTERFACE), TIMEOUT, what="veth up")
        yield created
    finally:
        for namespace in (created.node, created.host):
            with contextlib.suppress(RuntimeError, TimeoutError):
                _destroy_namespace(namespace)


@pytest.fixture
def port(link: Link) -> Iterator[socket.socket]:
    with open_port(PORT, netns=link.host) as sock:
        yield sock


def _read_raw(sock: socket.socket) -> list[bytes]:
    """What the kernel filter let through, without `receive`'s second guard against outgoing frames."""
    frames: list[bytes] = []
    while True:
        try:
            frame, address = sock.recvfrom(65536)
        except BlockingIOError:
            return frames
        assert address[2] != socket.PACKET_OUTGOING, f"the filter let an outgoing frame through: {frame.hex()}"
        frames.append(frame)


def _collect_until(
    sock: socket.socket, done: Callable[[list[bytes]], bool], read: Callable[[socket.socket], list[bytes]] = receive
) -> list[bytes]:
    """Every frame `read` returns until `done(frames)` holds; TimeoutError after TIMEOUT seconds."""
    frames: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while not done(frames):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"after {len(frames)} frames: {[read_frame(f) for f in frames]}")
        select.select([sock], [], [], remaining)
        frames += read(sock)
    return frames


def _garp(address: str, *, vlan: int | None = None) -> bytes:
    return ethernet(arp(1, address, address), 0x0806, dst=BROADCAST, vlan=vlan)


def _has(observation: VrrpAdvert | GratuitousArp) -> Callable[[list[bytes]], bool]:
    return lambda frames: any(read_frame(frame) == observation for frame in frames)


def _claims(frames: list[bytes]) -> list[VrrpAdvert | GratuitousArp]:
    return [observation for observation in map(read_frame, frames) if observation is not None]


def _marker(
    link: Link, sock: socket.socket, address: str, read: Callable[[socket.socket], list[bytes]] = receive
) -> list[bytes]:
    """Send a GARP from the node and return what arrived up to it: what was sent before it had its chance."""
    link.send_frames(link.node, NODE_INTERFACE, _garp(address))
    return _collect_until(sock, _has(GratuitousArp(IPv4Address(address))), read)


def test_an_advert_and_a_gratuitous_arp_from_the_instance_arrive_and_parse(link: Link, port: socket.socket) -> None:
    # A v3 advert through the node's IP stack, checksummed over keepalived's default pseudo-header.
    message = vrrp(vrid=42, priority=120, addresses=("198.51.100.7", "198.51.100.8"), src=NODE_IP)
    link.send(link.node, "ip", "112", NODE_IP, "224.0.0.18", message.hex())
    link.send_frames(link.node, NODE_INTERFACE, _garp("198.51.100.7"))
    advert = VrrpAdvert(
        version=3,
        vrid=42,
        priority=120,
        interval_seconds=1.0,
        addresses=(IPv4Address("198.51.100.7"), IPv4Address("198.51.100.8")),
        source_ip=IPv4Address(NODE_IP),
    )
    garp = GratuitousArp(IPv4Address("198.51.100.7"))
    frames = _collect_until(port, lambda frames: _has(advert)(frames) and _has(garp)(frames))
    assert _claims(frames) == [advert, garp]


def test_a_vlan_tagged_gratuitous_arp_arrives(link: Link, port: socket.socket) -> None:
    # The receiving kernel moves the tag out of the frame before taps see it: the filter sees plain ARP.
    link.send_frames(link.node, NODE_INTERFACE, _garp("198.51.100.9", vlan=42))
    frames = _collect_until(port, _has(GratuitousArp(IPv4Address("198.51.100.9"))))
    assert _claims(frames) == [GratuitousArp(IPv4Address("198.51.100.9"))]


def test_other_traffic_from_the_instance_is_filtered_in_the_kernel(link: Link, port: socket.socket) -> None:
    rx_before, _ = link.port_counters()
    link.send(link.node, "udp", HOST_SIDE_IP)
    echo = bytearray(b"\x08\x00\x00\x00\x12\x34\x00\x01" + b"ping")  # ICMP echo request
    echo[2:4] = internet_checksum(bytes(echo)).to_bytes(2, "big")
    link.send(link.node, "ip", str(socket.IPPROTO_ICMP), NODE_IP, HOST_SIDE_IP, echo.hex())
    ipv6 = ethernet(bytes(40), 0x86DD, dst=BROADCAST)
    ordinary_arp = ethernet(arp(1, NODE_IP, HOST_SIDE_IP), 0x0806, dst=BROADCAST)  # passes the filter, parses to None
    link.send_frames(link.node, NODE_INTERFACE, ipv6, ordinary_arp)

    frames = _marker(link, port, "198.51.100.20")
    assert [read_frame(frame) for frame in frames] == [None, GratuitousArp(IPv4Address("198.51.100.20"))]
    rx_after, _ = link.port_counters()
    assert rx_after - rx_before >= 5, "the UDP, ICMP and IPv6 frames never reached the port: the test proves nothing"


def test_frames_the_host_sends_toward_the_instance_are_never_received(link: Link, port: socket.socket) -> None:
    _, tx_before = link.port_counters()
    advert = ethernet(ipv4(vrrp(vrid=9, addresses=("198.51.100.30",))), 0x0800)
    link.send_frames(link.host, PORT, _garp("198.51.100.30"), advert)
    _, tx_after = link.port_counters()
    assert tx_after - tx_before >= 2, "the host's frames never left the port: the test proves nothing"

    # Read past `receive`: the kernel filter itself must have dropped them.
    frames = _marker(link, port, "198.51.100.31", read=_read_raw)
    assert [read_frame(frame) for frame in frames] == [GratuitousArp(IPv4Address("198.51.100.31"))]


def test_receive_drops_outgoing_frames_even_if_the_filter_let_them_through(
    link: Link, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture, "FILTER", [(0x06, 0, 0, capture.SNAPLEN)])  # BPF_RET|BPF_K: accept everything
    with open_port(PORT, netns=link.host) as sock:
        link.send_frames(link.host, PORT, _garp("198.51.100.40"))
        frames = _marker(link, sock, "198.51.100.41")
    observations = [read_frame(frame) for frame in frames]
    assert GratuitousArp(IPv4Address("198.51.100.41")) in observations
    assert GratuitousArp(IPv4Address("198.51.100.40")) not in observations


def test_opening_leaves_the_callers_namespace_alone(link: Link) -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    with open_port(PORT, netns=link.host) as sock:
        assert os.readlink("/proc/thread-self/ns/net") == before
        assert sock.getblocking() is False
        assert receive(sock) == []  # nothing waiting: returns at once


def test_missing_port_or_namespace(link: Link) -> None:
    with pytest.raises(PortUnavailable, match=rf"'nope0' in network namespace '{link.host}'"):
        open_port("nope0", netns=link.host)
    with pytest.raises(PortUnavailable, match="'nope0'"):
        open_port("nope0")
    with pytest.raises(PortUnavailable, match=rf"{link.host}-gone"):
        open_port(PORT, netns=f"{link.host}-gone")
    with pytest.raises(PortUnavailable, match="not a network namespace"):
        open_port(PORT, netns="../../proc/1/ns/net")
