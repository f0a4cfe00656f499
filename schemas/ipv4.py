"""The one IPv4 parser every service calls: HAVIPs are IPv4 only (the product's limit)."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address

from schemas.errors import ErrorCode, HaVipError


def parse_ipv4(text: str) -> IPv4Address:
    """An IPv4 address, or the error a tenant sees (`InvalidIpAddress.Malformed` / `.Version`)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise HaVipError(ErrorCode.IP_MALFORMED, f"{text!r} is not an IP address") from None
    if not isinstance(address, IPv4Address):
        raise HaVipError(ErrorCode.IP_VERSION, "a HAVIP is an IPv4 address; IPv6 is not supported")
    return address
