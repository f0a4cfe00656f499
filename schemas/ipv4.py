"""The one IPv4 syntax every service uses: HAVIPs are IPv4 only (the product's limit).

`parse_ipv4` is the only parser. `IPV4_PATTERN` is the same syntax as a
regular expression, for JSON Schemas and the OpenAPI document, and
`IPv4Text` carries it into pydantic models, and `is_ipv4_text` applies it
without building an address object (the forwarder checks every key of a
batch with it); `tests/unit/test_ipv4.py` checks that all of them accept
exactly the same strings.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address
from typing import Annotated

from pydantic import Field

from schemas.errors import ErrorCode, HaVipError

# 0-255 in decimal without leading zeros, as `ipaddress` (and glibc's inet_pton) read it.
# `[0-9]`, not `\d`: Python's `\d` also matches other scripts' digits, which `ipaddress` refuses.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# ECMA-262 (JSON Schema's dialect): `$` is the end of the string. Python's `re.search`
# also lets `$` match before a final newline, so check with `re.fullmatch` in Python.
IPV4_PATTERN = rf"^{_OCTET}(\.{_OCTET}){{3}}$"

# fullmatch, not match or search: Python's `$` would also let a final newline through.
_IPV4_TEXT = re.compile(IPV4_PATTERN).fullmatch

IPv4Text = Annotated[
    str,
    Field(
        pattern=IPV4_PATTERN,
        description="An IPv4 address in dotted-quad form without leading zeros, e.g. 10.0.0.7.",
        examples=["10.0.0.7"],
    ),
]


def parse_ipv4(text: str) -> IPv4Address:
    """An IPv4 address, or the error a tenant sees (`InvalidIpAddress.Malformed` / `.Version`)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise HaVipError(ErrorCode.IP_MALFORMED, f"{text!r} is not an IP address") from None
    if not isinstance(address, IPv4Address):
        raise HaVipError(ErrorCode.IP_VERSION, "a HAVIP is an IPv4 address; IPv6 is not supported")
    return address


def is_ipv4_text(text: str) -> bool:
    """True when `parse_ipv4` would take `text`; such a text is also already in canonical form.

    A precompiled match of the same pattern, about ten times cheaper than parsing.
    """
    return _IPV4_TEXT(text) is not None
