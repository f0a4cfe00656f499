"""The quota rules, with the error codes a tenant reads."""

import functools
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

import pytest

from schemas.errors import ErrorCode, HaVipError
from schemas.ipv4 import parse_ipv4
from services.quota import rules

VSW = rules.VSwitch("vsw-a", "tenant-1", "vpc-1", IPv4Network("192.168.1.0/24"))
HAVIP = rules.ReservedHaVip("havip-1", "tenant-1", "vsw-a")
LIMITS = rules.Limits()


def target(**overrides: object) -> rules.Target:
    fields: dict[str, object] = dict(
        target_id="i-1",
        instance_id="i-1",
        eni_id=None,
        tenant_id="tenant-1",
        vswitch_id="vsw-a",
        instance_status="Running",
    )
    fields.update(overrides)
    return rules.Target(**fields)  # type: ignore[arg-type]  # a dict of the fields, as overridden


def code_of(action: Callable[[], object]) -> ErrorCode:
    with pytest.raises(HaVipError) as caught:
        action()
    return caught.value.code


def attach(t: rules.Target, *, attached: bool = False, havip_count: int = 0, instance_count: int = 0) -> None:
    rules.check_attachment(
        HAVIP,
        t,
        instance_already_attached=attached,
        havip_attachments=havip_count,
        instance_havips=instance_count,
        limits=LIMITS,
    )


def test_only_ipv4_addresses_are_havips() -> None:
    assert parse_ipv4("192.168.1.50") == IPv4Address("192.168.1.50")
    assert code_of(lambda: parse_ipv4(" 192.168.1.50 ")) is ErrorCode.IP_MALFORMED
    assert code_of(lambda: parse_ipv4("2001:db8::1")) is ErrorCode.IP_VERSION
    assert code_of(lambda: parse_ipv4("192.168.1.300")) is ErrorCode.IP_MALFORMED


def test_address_must_lie_in_the_vswitch_and_not_be_reserved() -> None:
    rules.check_address_in_vswitch(IPv4Address("192.168.1.50"), VSW)
    assert code_of(lambda: rules.check_address_in_vswitch(IPv4Address("192.168.2.5"), VSW)) is ErrorCode.IP_OUT_OF_RANGE
    for reserved in ("192.168.1.0", "192.168.1.1", "192.168.1.255"):
        check = functools.partial(rules.check_address_in_vswitch, IPv4Address(reserved), VSW)
        assert code_of(check) is ErrorCode.IP_RESERVED


def test_address_in_use_is_refused() -> None:
    used = {IPv4Address("192.168.1.11")}
    assert code_of(lambda: rules.check_address_free(IPv4Address("192.168.1.11"), used)) is ErrorCode.IP_IN_USE
    rules.check_address_free(IPv4Address("192.168.1.12"), used)


def test_free_address_is_the_lowest_unused_and_deterministic() -> None:
    used = {IPv4Address("192.168.1.2"), IPv4Address("192.168.1.3")}
    assert rules.choose_free_address(VSW, used) == IPv4Address("192.168.1.4")
    tiny = rules.VSwitch("vsw-t", "tenant-1", "vpc-1", IPv4Network("10.0.0.0/30"))
    assert rules.choose_free_address(tiny, set()) == IPv4Address("10.0.0.2")
    assert code_of(lambda: rules.choose_free_address(tiny, {IPv4Address("10.0.0.2")})) is ErrorCode.IP_EXHAUSTED


def test_attachment_limits() -> None:
    attach(target(), havip_count=9, instance_count=4)
    assert code_of(lambda: attach(target(), havip_count=10)) is ErrorCode.QUOTA_HAVIP_ASSOCIATION
    assert code_of(lambda: attach(target(), instance_count=5)) is ErrorCode.QUOTA_INSTANCE_HAVIP


def test_attachment_preconditions() -> None:
    assert code_of(lambda: attach(target(tenant_id="tenant-2"))) is ErrorCode.NOT_FOUND_INSTANCE
    assert code_of(lambda: attach(target(instance_status="Starting"))) is ErrorCode.INSTANCE_STATUS
    attach(target(instance_status="Stopped"))
    assert code_of(lambda: attach(target(vswitch_id="vsw-b"))) is ErrorCode.VSWITCH_MISMATCH
    assert code_of(lambda: attach(target(), attached=True)) is ErrorCode.ALREADY_ATTACHED
