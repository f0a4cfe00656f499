"""The quota rules, as plain functions: no database, no broker.

Each check raises `HaVipError` with the code a tenant will read; the ledger
feeds them the counts it read under row locks, so the checks themselves
never race.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from schemas.errors import ErrorCode, HaVipError
from schemas.ipv4 import parse_ipv4
from schemas.messages import InstanceStatus

ATTACHABLE_STATUSES = frozenset({InstanceStatus.RUNNING, InstanceStatus.STOPPED})

# Codes that may only mean "our inventory copy is behind", not "no such thing".
INVENTORY_MISSES = frozenset({ErrorCode.NOT_FOUND_VSWITCH, ErrorCode.NOT_FOUND_INSTANCE, ErrorCode.NOT_FOUND_EIP})


@dataclass(frozen=True)
class Limits:
    attachments_per_havip: int = 10
    havips_per_instance: int = 5
    eips_per_havip: int = 1
    havips: int = 100  # per tenant


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


def limits_with(defaults: Limits, overrides: Mapping[str, int | None]) -> Limits:
    """A tenant's limits: each override that is set, else the cloud-wide default.

    A limit never overridden (None) follows the default, so changing a default changes every
    tenant that never had an override.
    """
    return replace(defaults, **{name: value for name in LIMIT_NAMES if (value := overrides.get(name)) is not None})


@dataclass(frozen=True)
class InventoryVSwitch:
    """A vSwitch as the inventory has it: any IP version, any tenant."""

    vswitch_id: str
    tenant_id: str
    vpc_id: str
    cidr: IPv4Network | IPv6Network


@dataclass(frozen=True)
class VSwitch:
    vswitch_id: str
    tenant_id: str
    vpc_id: str
    cidr: IPv4Network


def usable_vswitch(vswitch_id: str, tenant_id: str, found: InventoryVSwitch | None) -> VSwitch:
    """The vSwitch a tenant may put a HAVIP in; another tenant's answers as a missing one."""
    if found is None or found.tenant_id != tenant_id:
        raise HaVipError(ErrorCode.NOT_FOUND_VSWITCH, f"vSwitch {vswitch_id} was not found")
    if not isinstance(found.cidr, IPv4Network):
        raise HaVipError(ErrorCode.IP_VERSION, f"vSwitch {vswitch_id} is not an IPv4 network")
    return VSwitch(found.vswitch_id, found.tenant_id, found.vpc_id, found.cidr)


@dataclass(frozen=True)
class InventoryEni:
    eni_id: str
    instance_id: str
    vswitch_id: str


@dataclass(frozen=True)
class InventoryInstance:
    instance_id: str
    tenant_id: str
    vswitch_id: str
    status: str


def instance_id_of(target_id: str, eni: InventoryEni | None) -> str:
    """A target is an ENI (its instance is the one it is plugged into) or else an instance itself."""
    return eni.instance_id if eni is not None else target_id


def attachment_target(target_id: str, eni: InventoryEni | None, instance: InventoryInstance | None) -> Target:
    """What `target_id` names: an ENI sits in its own vSwitch, an instance in its primary one."""
    if instance is None:
        raise HaVipError(ErrorCode.NOT_FOUND_INSTANCE, f"{target_id} was not found")
    return Target(
        target_id=target_id,
        instance_id=instance.instance_id,
        eni_id=eni.eni_id if eni is not None else None,
        tenant_id=instance.tenant_id,
        vswitch_id=eni.vswitch_id if eni is not None else instance.vswitch_id,
        instance_status=instance.status,
    )


@dataclass(frozen=True)
class Target:
    """What a HAVIP would be attached to: an instance, or one of its ENIs."""

    target_id: str
    instance_id: str
    eni_id: str | None
    tenant_id: str
    vswitch_id: str
    instance_status: str


@dataclass(frozen=True)
class ReservedHaVip:
    havip_id: str
    tenant_id: str
    vswitch_id: str
    deleting: bool = False


def visible_havip(havip_id: str, tenant_id: str, found: ReservedHaVip | None) -> ReservedHaVip:
    """The tenant's own HAVIP; another tenant's answers as a missing one."""
    if found is None or found.tenant_id != tenant_id:
        raise HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"{havip_id} was not found")
    return found


def check_havip_id_free(havip_id: str, *, taken: bool) -> None:
    if taken:
        # The same answer whoever holds the id: it must not tell whose it is.
        raise HaVipError(ErrorCode.INVALID_PARAMETER, f"havip_id {havip_id} is already taken")


def reserved_addresses(cidr: IPv4Network) -> frozenset[IPv4Address]:
    """The network, its gateway (the first host, as VPC routers use it) and broadcast."""
    return frozenset({cidr.network_address, cidr.network_address + 1, cidr.broadcast_address})


def check_address_in_vswitch(address: IPv4Address, vswitch: VSwitch) -> None:
    if address not in vswitch.cidr:
        raise HaVipError(
            ErrorCode.IP_OUT_OF_RANGE, f"{address} is outside vSwitch {vswitch.vswitch_id} ({vswitch.cidr})"
        )
    if address in reserved_addresses(vswitch.cidr):
        raise HaVipError(
            ErrorCode.IP_RESERVED,
            f"{address} is the network, gateway or broadcast address of {vswitch.cidr}",
        )


def check_address_free(address: IPv4Address, used: Iterable[IPv4Address]) -> None:
    if address in set(used):
        raise HaVipError(ErrorCode.IP_IN_USE, f"{address} is used by another HAVIP or instance")


def choose_free_address(vswitch: VSwitch, used: Iterable[IPv4Address]) -> IPv4Address:
    """The lowest usable address nobody holds; deterministic, so a replay picks the same."""
    taken = set(used) | reserved_addresses(vswitch.cidr)
    for address in vswitch.cidr.hosts():
        if address not in taken:
            return address
    raise HaVipError(ErrorCode.IP_EXHAUSTED, f"vSwitch {vswitch.vswitch_id} has no free address left")


def havip_address(requested: str | None, vswitch: VSwitch, used: Iterable[IPv4Address]) -> IPv4Address:
    """The address asked for, if it may be had; else the lowest free one."""
    if requested is None:
        return choose_free_address(vswitch, used)
    address = parse_ipv4(requested)
    check_address_in_vswitch(address, vswitch)
    check_address_free(address, used)
    return address


def check_attachment(
    havip: ReservedHaVip,
    target: Target,
    *,
    instance_already_attached: bool,
    havip_attachments: int,
    instance_havips: int,
    limits: Limits,
) -> None:
    """May `target` be attached to `havip`, given the counts read under lock?"""
    check_not_deleting(havip)
    if target.tenant_id != havip.tenant_id:
        # Never reveal that another tenant's instance exists.
        code = ErrorCode.NOT_FOUND_INSTANCE
        raise HaVipError(code, f"{target.target_id} was not found")
    if target.instance_status not in ATTACHABLE_STATUSES:
        raise HaVipError(
            ErrorCode.INSTANCE_STATUS,
            f"instance {target.instance_id} is {target.instance_status}; it must be Running or Stopped",
        )
    if target.vswitch_id != havip.vswitch_id:
        raise HaVipError(
            ErrorCode.VSWITCH_MISMATCH,
            f"{target.target_id} is in vSwitch {target.vswitch_id}, the HAVIP in {havip.vswitch_id}",
        )
    if instance_already_attached:
        raise HaVipError(
            ErrorCode.ALREADY_ATTACHED, f"instance {target.instance_id} is already attached to {havip.havip_id}"
        )
    if havip_attachments >= limits.attachments_per_havip:
        raise HaVipError(
            ErrorCode.QUOTA_HAVIP_ASSOCIATION,
            f"{havip.havip_id} already has {havip_attachments} attachments (limit {limits.attachments_per_havip})",
        )
    if instance_havips >= limits.havips_per_instance:
        raise HaVipError(
            ErrorCode.QUOTA_INSTANCE_HAVIP,
            f"instance {target.instance_id} already has {instance_havips} HAVIPs (limit {limits.havips_per_instance})",
        )


def check_was_attached(*, detached: bool, havip_id: str, target_id: str) -> None:
    if not detached:
        raise HaVipError(ErrorCode.NOT_FOUND_ATTACHMENT, f"{target_id} is not attached to {havip_id}")


def check_havip_count(tenant_id: str, held: int, limits: Limits) -> None:
    if held >= limits.havips:
        raise HaVipError(
            ErrorCode.QUOTA_HAVIP, f"tenant {tenant_id} already holds {held} HAVIPs (limit {limits.havips})"
        )


def check_not_deleting(havip: ReservedHaVip) -> None:
    if havip.deleting:
        raise HaVipError(ErrorCode.HAVIP_STATUS, f"{havip.havip_id} is being deleted")


def check_deletable(havip: ReservedHaVip, *, attachments: int, eips: int) -> None:
    check_not_deleting(havip)
    check_no_dependants(havip.havip_id, attachments=attachments, eips=eips)


def check_no_dependants(havip_id: str, *, attachments: int, eips: int) -> None:
    """A HAVIP is deleted only when nothing depends on it (the seed's DeleteHaVip rule).

    Quota checks its ledger's counts, the mapping service its tables' (which can still hold an
    attachment quota already released): the same rule on each one's own copy.
    """
    if attachments or eips:
        raise HaVipError(
            ErrorCode.DEPENDENCY_HAVIP,
            f"{havip_id} still has {attachments} attachment(s) and {eips} EIP(s); detach and release them first",
        )


@dataclass(frozen=True)
class Eip:
    eip_id: str
    tenant_id: str
    ip_address: str
    held_by: str | None  # the HAVIP it is associated with, if any


def eip_of(eip_id: str, found: Eip | None) -> Eip:
    # Another tenant's EIP is refused by check_eip_association with the same answer.
    if found is None:
        raise HaVipError(ErrorCode.NOT_FOUND_EIP, f"{eip_id} was not found")
    return found


def check_eip_association(havip: ReservedHaVip, eip: Eip, *, havip_eips: int, limits: Limits) -> None:
    """May `eip` be associated with `havip`, given the HAVIP's EIP count read under lock?"""
    check_not_deleting(havip)
    if eip.tenant_id != havip.tenant_id:
        # Never reveal that another tenant's EIP exists.
        raise HaVipError(ErrorCode.NOT_FOUND_EIP, f"{eip.eip_id} was not found")
    if eip.held_by == havip.havip_id:
        raise HaVipError(ErrorCode.EIP_IN_USE, f"{eip.eip_id} is already associated with {havip.havip_id}")
    if eip.held_by is not None:
        raise HaVipError(ErrorCode.EIP_IN_USE, f"{eip.eip_id} is associated with another HAVIP; release it first")
    if havip_eips >= limits.eips_per_havip:
        raise HaVipError(
            ErrorCode.QUOTA_HAVIP_EIP,
            f"{havip.havip_id} already has {havip_eips} EIP(s) (limit {limits.eips_per_havip})",
        )


def check_was_associated(*, released: bool, havip_id: str, eip_id: str) -> None:
    if not released:
        raise HaVipError(ErrorCode.NOT_FOUND_EIP, f"{eip_id} is not associated with {havip_id}")
