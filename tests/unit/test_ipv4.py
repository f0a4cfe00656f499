"""One IPv4 syntax: the schema's pattern accepts exactly what `parse_ipv4` accepts."""

from __future__ import annotations

import re

import jsonschema_rs  # schemathesis's validator: it reads patterns as ECMA-262 does
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.errors import HaVipError
from schemas.ipv4 import IPV4_PATTERN, IPv4Text, is_ipv4_text, parse_ipv4

ADDRESS = TypeAdapter(IPv4Text)
JSON_SCHEMA = jsonschema_rs.Draft202012Validator(ADDRESS.json_schema())


def parses(text: str) -> bool:
    try:
        parse_ipv4(text)
    except HaVipError:
        return False
    return True


def matches(text: str) -> bool:
    # fullmatch: ECMA-262's `$`, which unlike Python's never matches before a final newline.
    return re.fullmatch(IPV4_PATTERN, text) is not None


def validates(text: str) -> bool:
    try:
        ADDRESS.validate_python(text)
    except ValidationError:
        return False
    return True


def assert_one_verdict(text: str) -> None:
    verdict = parses(text)
    assert matches(text) is verdict, text
    assert is_ipv4_text(text) is verdict, text
    assert validates(text) is verdict, text
    assert JSON_SCHEMA.is_valid(text) is verdict, text


# Pieces an almost-address is made of: numbers around the octet range, leading zeros,
# signs, spaces, other scripts' digits, and IPv6 or CIDR leftovers.
_octet_like = st.one_of(
    st.integers(min_value=0, max_value=300).map(str),
    st.integers(min_value=0, max_value=999).map(lambda n: f"0{n}"),
    st.sampled_from(["", "00", "000", "+1", "-1", " 1", "1 ", "0x1", "١", "٣٤", "1e2", "255\n", "²"]),
    st.text(alphabet="0123456789 .:/x\n\t", max_size=4),
)
_near_ipv4 = st.builds(
    lambda octets, separator, prefix, suffix: prefix + separator.join(octets) + suffix,
    st.lists(_octet_like, min_size=2, max_size=6),
    st.sampled_from([".", ".", ".", ":", ". ", ",", ".."]),
    st.sampled_from(["", "", " ", "\n", "::ffff:", "0"]),
    st.sampled_from(["", "", "\n", " ", "/32", "%eth0", "."]),
)


@given(st.text(max_size=24))
def test_random_text_gets_one_verdict(text: str) -> None:
    assert_one_verdict(text)


@given(_near_ipv4)
@example("10.0.0.1")
@example("255.255.255.255")
@example("0.0.0.0")
@example("10.0.0.01")
@example("10.0.0.1\n")
@example(" 10.0.0.1")
@example("10.0.0.256")
@example("::ffff:10.0.0.1")
def test_almost_addresses_get_one_verdict(text: str) -> None:
    assert_one_verdict(text)


@given(st.tuples(*[st.integers(min_value=0, max_value=255)] * 4))
def test_every_address_is_accepted_in_canonical_form(octets: tuple[int, int, int, int]) -> None:
    text = ".".join(map(str, octets))
    assert matches(text) and validates(text)
    assert str(parse_ipv4(text)) == text
    assert is_ipv4_text(text)  # and, being accepted, it is its own canonical form


@pytest.mark.parametrize("text", ["10.0.0.1\n", "010.0.0.1", "1.2.3", "1.2.3.4.5", "١.2.3.4", "2001:db8::1", ""])
def test_what_both_refuse(text: str) -> None:
    assert not parses(text) and not matches(text) and not validates(text) and not is_ipv4_text(text)


def test_models_and_their_json_schemas_carry_the_pattern() -> None:
    class Key(BaseModel):
        ip: IPv4Text

    assert Key.model_json_schema()["properties"]["ip"]["pattern"] == IPV4_PATTERN
    assert Key(ip="192.0.2.1").ip == "192.0.2.1"
    with pytest.raises(ValidationError):
        Key(ip="192.0.2.01")
