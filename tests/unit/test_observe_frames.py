"""services.observe.frames: frames built by hand, byte by byte, as they would come off an instance's port."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from typing import Any

import pytest

from services.observe.frames import GratuitousArp, MalformedFrame, VrrpAdvert, internet_checksum, read_frame

NODE_MAC = bytes.fromhex("020000000001")
VRRP_MAC = bytes.fromhex("01005e000012")  # 224.0.0.18's multicast MAC
BROADCAST = b"\xff" * 6
SOURCE = "192.0.2.10"
GROUP = "224.0.0.18"


def ethernet(payload: bytes, ethertype: int, *, dst: bytes = VRRP_MAC, vlan: int | None = None) -> bytes:
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan)
    return dst + NODE_MAC + tag + struct.pack("!H", ethertype) + payload


def ipv4(
    payload: bytes,
    *,
    protocol: int = 112,
    src: str = SOURCE,
    dst: str = GROUP,
    flags_fragment: int = 0,
    options: bytes = b"",
    total_length: int | None = None,
) -> bytes:
    header_length = 20 + len(options)
    length = header_length + len(payload) if total_length is None else total_length
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | header_length // 4,
        0xC0,
        length,
        0x1234,
        flags_fragment,
        255,
        protocol,
        0,
        IPv4Address(src).packed,
        IPv4Address(dst).packed,
    )
    header += options
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def vrrp(
    *,
    version: int = 3,
    vrid: int = 51,
    priority: int = 100,
    addresses: tuple[str, ...] = ("198.51.100.7",),
    interval: int = 100,  # the whole 16-bit word: v3 centiseconds, v2 seconds
    checksum: str = "pseudo",  # "pseudo" (v3, keepalived's default), "plain" (v2, RFC 9568 v3 over IPv4), "none"
    kind: int = 1,
    count: int | None = None,
    src: str = SOURCE,
    dst: str = GROUP,
) -> bytes:
    count = len(addresses) if count is None else count
    # v2: Auth Type 0 in the high byte, Adver Int in the low one; v3: 4 reserved bits and Max Adver Int.
    message = struct.pack("!BBBBHH", version << 4 | kind, vrid, priority, count, interval, 0)
    message += b"".join(IPv4Address(a).packed for a in addresses)
    if version == 2:
        message += bytes(8)  # authentication data
    if checksum == "plain":
        value = internet_checksum(message)
    elif checksum == "pseudo":
        pseudo = IPv4Address(src).packed + IPv4Address(dst).packed + struct.pack("!BBH", 0, 112, len(message))
        value = internet_checksum(pseudo + message)
    else:
        value = 0
    return message[:6] + struct.pack("!H", value) + message[8:]


def arp(operation: int, sender: str, target: str, *, htype: int = 1) -> bytes:
    return struct.pack("!HHBBH", htype, 0x0800, 6, 4, operation) + (
        NODE_MAC + IPv4Address(sender).packed + bytes(6) + IPv4Address(target).packed
    )


def vrrp_frame(**options: Any) -> bytes:
    return ethernet(ipv4(vrrp(**options)), 0x0800)


# --- the Internet checksum ---


def test_internet_checksum_matches_known_values() -> None:
    # RFC 1071 §3's example words sum to 0xddf2, whose complement is the checksum.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    # A real IPv4 header with its checksum (0xb861) zeroed, then in place: 0 means valid.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(header) == 0xB861
    assert internet_checksum(header[:10] + bytes.fromhex("b861") + header[12:]) == 0
    assert internet_checksum(b"\x01") == internet_checksum(b"\x01\x00")  # an odd byte is padded with zero


# --- VRRP adverts ---


def test_v3_with_the_pseudo_header_checksum() -> None:
    assert read_frame(vrrp_frame()) == VrrpAdvert(
        version=3,
        vrid=51,
        priority=100,
        interval_seconds=1.0,
        addresses=(IPv4Address("198.51.100.7"),),
        source_ip=IPv4Address(SOURCE),
    )


def test_v3_with_the_plain_checksum_is_accepted_too() -> None:
    advert = read_frame(vrrp_frame(checksum="plain"))
    assert isinstance(advert, VrrpAdvert) and advert.version == 3


def test_v2() -> None:
    assert read_frame(vrrp_frame(version=2, interval=1, checksum="plain", priority=150, vrid=7)) == VrrpAdvert(
        version=2,
        vrid=7,
        priority=150,
        interval_seconds=1.0,
        addresses=(IPv4Address("198.51.100.7"),),
        source_ip=IPv4Address(SOURCE),
    )


def test_v2_never_uses_the_pseudo_header() -> None:
    with pytest.raises(MalformedFrame, match="checksum"):
        read_frame(vrrp_frame(version=2, interval=1, checksum="pseudo"))


@pytest.mark.parametrize(
    ("version", "interval", "seconds"),
    [(3, 100, 1.0), (3, 25, 0.25), (3, 4095, 40.95), (2, 1, 1.0), (2, 3, 3.0)],
)
def test_interval(version: int, interval: int, seconds: float) -> None:
    checksum = "plain" if version == 2 else "pseudo"
    advert = read_frame(vrrp_frame(version=version, interval=interval, checksum=checksum))
    assert isinstance(advert, VrrpAdvert) and advert.interval_seconds == seconds


def test_v3_reserved_bits_do_not_change_the_interval() -> None:
    advert = read_frame(vrrp_frame(interval=0xF064))  # reserved nibble set, 0x064 = 100 cs
    assert isinstance(advert, VrrpAdvert) and advert.interval_seconds == 1.0


@pytest.mark.parametrize("version", [2, 3])
def test_several_addresses_in_order(version: int) -> None:
    addresses = ("198.51.100.7", "198.51.100.8", "203.0.113.1")
    checksum = "plain" if version == 2 else "pseudo"
    advert = read_frame(vrrp_frame(version=version, interval=1, addresses=addresses, checksum=checksum))
    assert isinstance(advert, VrrpAdvert)
    assert advert.addresses == tuple(IPv4Address(a) for a in addresses)


def test_no_address_at_all_is_a_valid_advert() -> None:
    advert = read_frame(vrrp_frame(addresses=()))
    assert isinstance(advert, VrrpAdvert) and advert.addresses == ()


def test_priority_zero_the_sender_steps_down() -> None:
    advert = read_frame(vrrp_frame(priority=0))
    assert isinstance(advert, VrrpAdvert) and advert.priority == 0


def test_unicast_advert_checks_its_pseudo_header_with_the_real_destination() -> None:
    message = vrrp(dst="192.0.2.11")
    advert = read_frame(ethernet(ipv4(message, dst="192.0.2.11"), 0x0800, dst=BROADCAST))
    assert isinstance(advert, VrrpAdvert)


def test_vlan_tagged_advert() -> None:
    advert = read_frame(ethernet(ipv4(vrrp()), 0x0800, vlan=42))
    assert isinstance(advert, VrrpAdvert) and advert.vrid == 51


def test_ethernet_padding_after_the_ip_packet_is_ignored() -> None:
    frame = vrrp_frame() + b"\xaa" * 20
    advert = read_frame(frame)
    assert isinstance(advert, VrrpAdvert) and advert.addresses == (IPv4Address("198.51.100.7"),)


def test_ip_options_move_the_vrrp_message() -> None:
    router_alert = bytes.fromhex("94040000")
    advert = read_frame(ethernet(ipv4(vrrp(), options=router_alert), 0x0800))
    assert isinstance(advert, VrrpAdvert) and advert.vrid == 51


# --- gratuitous ARP ---


@pytest.mark.parametrize("operation", [1, 2])
def test_gratuitous_arp_request_and_reply(operation: int) -> None:
    frame = ethernet(arp(operation, "198.51.100.7", "198.51.100.7"), 0x0806, dst=BROADCAST)
    assert read_frame(frame) == GratuitousArp(address=IPv4Address("198.51.100.7"))


def test_a_gratuitous_request_counts_whoever_it_is_sent_to() -> None:
    frame = ethernet(arp(1, "198.51.100.7", "198.51.100.7"), 0x0806, dst=NODE_MAC)
    assert read_frame(frame) == GratuitousArp(address=IPv4Address("198.51.100.7"))


def test_a_reply_to_one_station_is_an_answer_not_an_announcement() -> None:
    # A killed keepalived's node still holds the VIP and answers the new master's announcement.
    frame = ethernet(arp(2, "198.51.100.7", "198.51.100.7"), 0x0806, dst=NODE_MAC)
    assert read_frame(frame) is None


def test_gratuitous_arp_with_padding() -> None:
    frame = ethernet(arp(1, "198.51.100.7", "198.51.100.7"), 0x0806, dst=BROADCAST) + bytes(18)
    assert read_frame(frame) == GratuitousArp(address=IPv4Address("198.51.100.7"))


@pytest.mark.parametrize(
    "packet",
    [
        arp(1, "192.0.2.10", "192.0.2.1"),  # an ordinary request
        arp(2, "192.0.2.1", "192.0.2.10"),  # an ordinary reply
        arp(1, "0.0.0.0", "198.51.100.7"),  # an address probe (RFC 5227)
        arp(3, "198.51.100.7", "198.51.100.7"),  # not a request or reply
        arp(1, "198.51.100.7", "198.51.100.7", htype=6),  # another hardware type
    ],
)
def test_other_arp_is_not_ours(packet: bytes) -> None:
    assert read_frame(ethernet(packet, 0x0806, dst=BROADCAST)) is None


# --- frames that are not ours ---


@pytest.mark.parametrize(
    "frame",
    [
        ethernet(ipv4(bytes(8), protocol=17), 0x0800),  # UDP
        ethernet(ipv4(bytes(8), protocol=1), 0x0800),  # ICMP
        ethernet(bytes(40), 0x86DD),  # IPv6
        ethernet(bytes(46), 0x88CC),  # LLDP
        ethernet(ipv4(vrrp(kind=2)), 0x0800),  # a VRRP type that is not an advertisement
        ethernet(ipv4(vrrp(), flags_fragment=0x2000), 0x0800),  # first fragment (more fragments)
        ethernet(ipv4(vrrp(), flags_fragment=0x0003), 0x0800),  # a later fragment
        NODE_MAC,  # shorter than an Ethernet header
    ],
)
def test_not_ours(frame: bytes) -> None:
    assert read_frame(frame) is None


# --- broken VRRP and ARP ---


def _flip(frame: bytes, index: int) -> bytes:
    return frame[:index] + bytes([frame[index] ^ 0xFF]) + frame[index + 1 :]


VRRP_AT = 14 + 20  # the VRRP message in a frame without tag or IP options


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_flip(vrrp_frame(), VRRP_AT + 2), "bad VRRP checksum"),  # the priority changed in flight
        (_flip(vrrp_frame(), VRRP_AT + 7), "bad VRRP checksum"),  # the checksum itself
        (_flip(vrrp_frame(version=2, interval=1, checksum="plain"), VRRP_AT + 19), "bad VRRP checksum"),  # auth data
        (vrrp_frame(checksum="none"), "bad VRRP checksum"),
        (_flip(vrrp_frame(), 14 + 8), "bad IPv4 header checksum"),  # the TTL
        (vrrp_frame()[:-2], "total length"),  # truncated: the IP header promises more
        (vrrp_frame()[: 14 + 12], "truncated IPv4 header"),
        (ethernet(ipv4(vrrp()[:6]), 0x0800), "truncated VRRP header"),
        (ethernet(ipv4(vrrp() + bytes(4)), 0x0800), "count 1 needs"),  # more bytes than the count says
        (vrrp_frame(addresses=("198.51.100.7", "198.51.100.8"), count=1), "count 1 needs"),
        (vrrp_frame(addresses=("198.51.100.7",), count=2), "count 2 needs"),
        (vrrp_frame(version=2, interval=1, checksum="plain", count=3), "count 3 needs"),
        (vrrp_frame(version=4), "VRRP version 4"),
        (vrrp_frame(version=1), "VRRP version 1"),
        (vrrp_frame(vrid=0), "VRID 0"),
        (ethernet(ipv4(vrrp(), total_length=10), 0x0800), "total length"),
        (ethernet(ipv4(vrrp())[:20].replace(b"\x45", b"\x44", 1) + vrrp(), 0x0800), "header length 16"),
        (ethernet(b"\x65" + ipv4(vrrp())[1:], 0x0800), "IP version 6"),
    ],
)
def test_malformed_vrrp(frame: bytes, reason: str) -> None:
    with pytest.raises(MalformedFrame, match=reason):
        read_frame(frame)


def test_malformed_frame_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        read_frame(vrrp_frame(vrid=0))


@pytest.mark.parametrize(
    "frame",
    [
        ethernet(arp(1, "198.51.100.7", "198.51.100.7")[:20], 0x0806, dst=BROADCAST),
        ethernet(arp(1, "198.51.100.7", "198.51.100.7")[:6], 0x0806, dst=BROADCAST),
    ],
)
def test_truncated_arp(frame: bytes) -> None:
    with pytest.raises(MalformedFrame, match="truncated ARP"):
        read_frame(frame)
