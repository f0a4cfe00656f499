"""What an Ethernet frame seen on an instance's port claims: a VRRP advert, a gratuitous ARP, or nothing.

Pure parsing, no I/O. Frames come as an AF_PACKET SOCK_RAW socket gives them:
the 14-byte Ethernet header first, possibly followed by padding past the end
of the IP packet (Ethernet's 60-byte minimum). `read_frame` returns None for
anything that is not ours, and raises `MalformedFrame` for a frame that says it
is VRRP or ARP but could not have been accepted by a VRRP router or an ARP
cache: a broken frame must never become a claim, and the caller may want to
count it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

_ETH_HEADER = 14
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_ARP = 0x0806
_BROADCAST = b"\xff" * 6
_ETHERTYPE_VLAN = 0x8100  # IEEE 802.1Q: a 4-byte tag (TPID, TCI) before the real ethertype
_IPPROTO_VRRP = 112  # RFC 3768 §5.2.4, RFC 5798 §5.1.1.4
_VRRP_ADVERTISEMENT = 1  # the only VRRP type (RFC 3768 §5.3.2, RFC 5798 §5.2.2)
_VRRP_HEADER = 8
_VRRP2_AUTH_DATA = 8  # RFC 3768 §5.3.10: always present, whatever the auth type
_ARP_LENGTH = 28  # RFC 826 for Ethernet/IPv4: 8 fixed bytes + 2 x (6-byte MAC + 4-byte IPv4)


class MalformedFrame(ValueError):
    """A frame that claims to be VRRP or ARP but is broken (truncated, inconsistent, bad checksum)."""


@dataclass(frozen=True, slots=True)
class VrrpAdvert:
    version: int  # 2 or 3
    vrid: int  # 1..255
    priority: int  # 0 (the sender is stepping down, RFC 3768 §5.3.4) .. 255 (address owner)
    interval_seconds: float
    addresses: tuple[IPv4Address, ...]
    source_ip: IPv4Address  # from the IP header: informational, anyone can write it


@dataclass(frozen=True, slots=True)
class GratuitousArp:
    address: IPv4Address


Observation = VrrpAdvert | GratuitousArp


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the one's complement of the one's complement sum of 16-bit big-endian words.

    Over data that includes its own checksum field, a correct checksum gives 0.
    """
    if len(data) % 2:
        data += b"\x00"  # RFC 1071: an odd last byte is summed as if padded with zero
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)  # end-around carry
    return ~total & 0xFFFF


def read_frame(frame: bytes) -> Observation | None:
    """The VRRP advert or gratuitous ARP this frame carries, None if it is neither; MalformedFrame if broken."""
    if len(frame) < _ETH_HEADER:
        return None  # not even an Ethernet header: nothing claims to be anything
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    offset = _ETH_HEADER
    if ethertype == _ETHERTYPE_VLAN:
        # One tag is skipped; the kernel normally strips it before we see the frame anyway.
        if len(frame) < _ETH_HEADER + 4:
            return None
        (ethertype,) = struct.unpack_from("!H", frame, 16)
        offset += 4
    if ethertype == _ETHERTYPE_ARP:
        return _read_arp(frame[offset:], broadcast=frame[:6] == _BROADCAST)
    if ethertype == _ETHERTYPE_IPV4:
        return _read_ipv4(frame[offset:])
    return None


def _read_arp(packet: bytes, *, broadcast: bool) -> GratuitousArp | None:
    if len(packet) < 8:
        raise MalformedFrame("truncated ARP header")
    htype, ptype, hlen, plen, operation = struct.unpack_from("!HHBBH", packet)
    if (htype, ptype, hlen, plen) != (1, _ETHERTYPE_IPV4, 6, 4) or operation not in (1, 2):
        return None  # ARP for another medium or protocol, or not a request/reply (RFC 826)
    if len(packet) < _ARP_LENGTH:
        raise MalformedFrame(f"truncated ARP packet ({len(packet)} of {_ARP_LENGTH} bytes)")
    sender = IPv4Address(packet[14:18])
    target = IPv4Address(packet[24:28])
    # RFC 5227 §2.3 / RFC 5944 §4.6: gratuitous means sender == target, as request or reply alike.
    # 0.0.0.0 is an address probe (RFC 5227 §2.1.1), never an announcement.
    if sender != target or sender.is_unspecified:
        return None
    # An announcement is sent to everyone. A reply sent to one station is an answer: a node whose
    # keepalived was killed still holds the VIP and answers the new master's announcement ("who
    # has the VIP, tell the VIP") with a reply whose sender and target are both the VIP, unicast
    # to the new master. Taken for an announcement, it would hand the VIP back to the dead node.
    if operation == 2 and not broadcast:
        return None
    return GratuitousArp(address=sender)


def _read_ipv4(packet: bytes) -> VrrpAdvert | None:
    if len(packet) > 9 and packet[9] != _IPPROTO_VRRP:
        return None  # another protocol (RFC 791: protocol at byte 9)
    if len(packet) < 20:
        raise MalformedFrame("truncated IPv4 header")
    version_ihl, _, total_length, _, flags_fragment, _, _, _, source, destination = struct.unpack_from(
        "!BBHHHBBH4s4s", packet
    )
    header_length = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4:
        raise MalformedFrame(f"IP version {version_ihl >> 4} under the IPv4 ethertype")
    if header_length < 20:
        raise MalformedFrame(f"IPv4 header length {header_length} < 20")
    if total_length < header_length or total_length > len(packet):
        raise MalformedFrame(f"IPv4 total length {total_length} inconsistent with {len(packet)} bytes received")
    if flags_fragment & 0x3FFF:
        return None  # more-fragments set or a non-zero offset: adverts are never fragmented, ignore pieces
    if internet_checksum(packet[:header_length]):
        raise MalformedFrame("bad IPv4 header checksum")  # the receiving stack would drop it (RFC 1122 §3.2.1.2)
    # The total length, not the frame's length, bounds the message: Ethernet padding may follow.
    return _read_vrrp(packet[header_length:total_length], source, destination)


def _read_vrrp(message: bytes, source: bytes, destination: bytes) -> VrrpAdvert | None:
    if len(message) < _VRRP_HEADER:
        raise MalformedFrame("truncated VRRP header")
    version_type, vrid, priority, count, word = struct.unpack_from("!BBBBH", message)
    version, kind = version_type >> 4, version_type & 0x0F
    if version not in (2, 3):
        raise MalformedFrame(f"VRRP version {version}")
    if kind != _VRRP_ADVERTISEMENT:
        return None
    trailer = _VRRP2_AUTH_DATA if version == 2 else 0
    expected = _VRRP_HEADER + 4 * count + trailer
    if len(message) != expected:
        raise MalformedFrame(f"count {count} needs a {expected}-byte VRRP message, got {len(message)}")
    if not _checksum_ok(version, message, source, destination):
        raise MalformedFrame("bad VRRP checksum")
    if vrid == 0:
        raise MalformedFrame("VRID 0")  # RFC 3768 §5.3.3, RFC 5798 §5.2.3: 1..255
    # v2 (RFC 3768 §5.3.6-7): Auth Type, then Adver Int in whole seconds.
    # v3 (RFC 5798 §5.2.6-7): 4 reserved bits, then a 12-bit Max Adver Int in centiseconds.
    interval = float(word & 0xFF) if version == 2 else (word & 0x0FFF) / 100
    addresses = tuple(IPv4Address(message[i : i + 4]) for i in range(_VRRP_HEADER, _VRRP_HEADER + 4 * count, 4))
    return VrrpAdvert(
        version=version,
        vrid=vrid,
        priority=priority,
        interval_seconds=interval,
        addresses=addresses,
        source_ip=IPv4Address(source),
    )


def _checksum_ok(version: int, message: bytes, source: bytes, destination: bytes) -> bool:
    # RFC 3768 §5.3.8: v2 sums the VRRP message alone (its auth data included).
    if internet_checksum(message) == 0:
        return True
    if version == 2:
        return False
    # RFC 5798 §5.2.8 adds a pseudo-header, which for IPv4 keepalived (by default) and others read as
    # source, destination, zero, protocol, VRRP length; RFC 9568 drops it for IPv4, as v2 did. Both exist
    # in the field, and a v3 router that accepts either is what we mimic.
    pseudo_header = source + destination + struct.pack("!BBH", 0, _IPPROTO_VRRP, len(message))
    return internet_checksum(pseudo_header + message) == 0
