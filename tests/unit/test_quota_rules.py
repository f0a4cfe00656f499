"""The quota rules, with the error codes a tenant reads."""

import functools
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Network

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


def attach(
    t: rules.Target,
    *,
    attached: bool = False,
    havip_count: int = 0,
    instance_count: int = 0,
    havip: rules.ReservedHaVip = HAVIP,
) -> None:
    rules.check_attachment(
        havip,
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


def test_a_tenants_limit_is_its_override_or_else_the_default() -> None:
    defaults = rules.Limits(havips=50)
    assert rules.limits_with(defaults, {}) == defaults
    assert rules.limits_with(defaults, {"havips": 3, "eips_per_havip": None}) == rules.Limits(havips=3)
    assert rules.limits_with(defaults, {"attachments_per_havip": 0}).attachments_per_havip == 0
    assert set(rules.LIMIT_NAMES) == {"havips", "attachments_per_havip", "havips_per_instance", "eips_per_havip"}


def test_another_tenants_vswitch_or_havip_answers_as_missing() -> None:
    found = rules.InventoryVSwitch("vsw-a", "tenant-1", "vpc-1", IPv4Network("192.168.1.0/24"))
    assert rules.usable_vswitch("vsw-a", "tenant-1", found) == VSW
    assert code_of(lambda: rules.usable_vswitch("vsw-a", "tenant-2", found)) is ErrorCode.NOT_FOUND_VSWITCH
    assert code_of(lambda: rules.usable_vswitch("vsw-a", "tenant-1", None)) is ErrorCode.NOT_FOUND_VSWITCH
    v6 = rules.InventoryVSwitch("vsw-6", "tenant-1", "vpc-1", IPv6Network("2001:db8::/64"))
    assert code_of(lambda: rules.usable_vswitch("vsw-6", "tenant-1", v6)) is ErrorCode.IP_VERSION
    assert rules.visible_havip("havip-1", "tenant-1", HAVIP) is HAVIP
    assert code_of(lambda: rules.visible_havip("havip-1", "tenant-2", HAVIP)) is ErrorCode.NOT_FOUND_HAVIP
    assert code_of(lambda: rules.visible_havip("havip-1", "tenant-1", None)) is ErrorCode.NOT_FOUND_HAVIP
    assert code_of(lambda: rules.check_havip_id_free("havip-1", taken=True)) is ErrorCode.INVALID_PARAMETER


def test_a_target_is_an_eni_in_its_own_vswitch_or_an_instance() -> None:
    eni = rules.InventoryEni("eni-1", "i-1", "vsw-b")
    inst = rules.InventoryInstance("i-1", "tenant-1", "vsw-a", "Running")
    assert rules.instance_id_of("eni-1", eni) == "i-1"
    assert rules.instance_id_of("i-1", None) == "i-1"
    assert rules.attachment_target("eni-1", eni, inst) == target(target_id="eni-1", eni_id="eni-1", vswitch_id="vsw-b")
    assert rules.attachment_target("i-1", None, inst) == target()
    assert code_of(lambda: rules.attachment_target("i-1", None, None)) is ErrorCode.NOT_FOUND_INSTANCE


def test_a_havip_gets_the_address_asked_for_or_the_lowest_free() -> None:
    used = {IPv4Address("192.168.1.2")}
    assert rules.havip_address(None, VSW, used) == IPv4Address("192.168.1.3")
    assert rules.havip_address("192.168.1.9", VSW, used) == IPv4Address("192.168.1.9")
    assert code_of(lambda: rules.havip_address("192.168.1.2", VSW, used)) is ErrorCode.IP_IN_USE
    assert code_of(lambda: rules.havip_address("192.168.1.1", VSW, used)) is ErrorCode.IP_RESERVED
    assert code_of(lambda: rules.havip_address("fe80::1", VSW, used)) is ErrorCode.IP_VERSION


def test_detaching_or_releasing_what_is_not_there_is_not_found() -> None:
    rules.check_was_attached(detached=True, havip_id="havip-1", target_id="i-1")
    check = functools.partial(rules.check_was_attached, detached=False, havip_id="havip-1", target_id="i-1")
    assert code_of(check) is ErrorCode.NOT_FOUND_ATTACHMENT
    rules.check_was_associated(released=True, havip_id="havip-1", eip_id="eip-1")
    release = functools.partial(rules.check_was_associated, released=False, havip_id="havip-1", eip_id="eip-1")
    assert code_of(release) is ErrorCode.NOT_FOUND_EIP


def test_eip_association_rules() -> None:
    mine = rules.Eip("eip-1", "tenant-1", "203.0.113.1", None)
    assert rules.eip_of("eip-1", mine) is mine
    assert code_of(lambda: rules.eip_of("eip-1", None)) is ErrorCode.NOT_FOUND_EIP

    def associate(eip: rules.Eip, held: int = 0, havip: rules.ReservedHaVip = HAVIP) -> None:
        rules.check_eip_association(havip, eip, havip_eips=held, limits=LIMITS)

    associate(mine)
    assert code_of(lambda: associate(mine, held=1)) is ErrorCode.QUOTA_HAVIP_EIP
    assert code_of(lambda: associate(rules.Eip("eip-2", "tenant-2", "203.0.113.2", None))) is ErrorCode.NOT_FOUND_EIP
    for holder in ("havip-1", "havip-2"):
        held_eip = rules.Eip("eip-1", "tenant-1", "203.0.113.1", holder)
        assert code_of(functools.partial(associate, held_eip)) is ErrorCode.EIP_IN_USE
    deleting = rules.ReservedHaVip("havip-1", "tenant-1", "vsw-a", deleting=True)
    assert code_of(lambda: associate(mine, havip=deleting)) is ErrorCode.HAVIP_STATUS


def test_a_havip_is_deletable_only_with_nothing_on_it() -> None:
    rules.check_deletable(HAVIP, attachments=0, eips=0)
    assert code_of(lambda: rules.check_deletable(HAVIP, attachments=1, eips=0)) is ErrorCode.DEPENDENCY_HAVIP
    assert code_of(lambda: rules.check_deletable(HAVIP, attachments=0, eips=1)) is ErrorCode.DEPENDENCY_HAVIP
    deleting = rules.ReservedHaVip("havip-1", "tenant-1", "vsw-a", deleting=True)
    assert code_of(lambda: rules.check_deletable(deleting, attachments=0, eips=0)) is ErrorCode.HAVIP_STATUS
    assert code_of(lambda: attach(target(), havip=deleting)) is ErrorCode.HAVIP_STATUS
