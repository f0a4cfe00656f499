"""Who is who on one host: the ports an observer watches, and which addresses are HAVIPs attached to whom.

Pure: built from the inventory (`ens.inventory`: instances and ENIs with their host, port and
MAC) and the mapping state (`havip.mappings`: each HAVIP's address, VPC and attachments), each
record applied only if newer than what is held. The observer asks it two things:

- `ports()`: the ports on this host and the instance behind each. A frame is the instance's
  because it arrived on the instance's port; the MAC and IP written in the frame are never
  asked (keepalived's `use_vmac` sends from 00:00:5e:00:01:VRID, and a guest can write anything).
- `judge(port, address)`: whether the instance behind `port` may claim `address`. Addresses are
  looked up in the port's VPC only: private address space is the tenant's, and the same address
  in another VPC is another network. An address that is no HAVIP there is none of our business
  (a tenant may run VRRP for its own reasons); a HAVIP of another tenant, or one the instance
  is not attached to, is an unexpected claimant, which an operator must be able to see.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address

from schemas.ipv4 import parse_ipv4
from schemas.messages import (
    EipChanged,
    EniChanged,
    HaVipMappingChanged,
    HaVipStatus,
    InstanceChanged,
    InstanceStatus,
    VSwitchChanged,
)
from services.observe.claims import ClaimKey


@dataclass(frozen=True, slots=True)
class Port:
    """A port on this host and the instance whose frames arrive on it."""

    name: str
    instance_id: str
    tenant_id: str
    vpc_id: str
    eni_id: str | None = None


@dataclass(frozen=True, slots=True)
class HavipAddress:
    havip_id: str
    tenant_id: str
    vpc_id: str
    address: IPv4Address
    attached: frozenset[str]  # instance ids


class Standing(StrEnum):
    CLAIMANT = "claimant"  # attached: its adverts and GARPs are claims
    NOT_A_HAVIP = "not-a-havip"  # no HAVIP has this address in the port's VPC
    UNEXPECTED = "unexpected"  # a HAVIP's address, from an instance that may not claim it


@dataclass(frozen=True, slots=True)
class Judgement:
    standing: Standing
    havip: HavipAddress | None = None
    reason: str = ""


class HostView:
    def __init__(self, host_id: str) -> None:
        self.host_id = host_id
        self._instances: dict[str, InstanceChanged] = {}
        self._enis: dict[str, EniChanged] = {}
        self._vswitch_vpcs: dict[str, str] = {}
        self._revisions: dict[str, int] = {}
        self._havips: dict[str, HavipAddress] = {}
        self._havip_versions: dict[str, int] = {}
        self._by_address: dict[tuple[str, IPv4Address], HavipAddress] = {}
        self._ports: dict[str, Port] | None = None

    def apply_inventory(self, record: VSwitchChanged | InstanceChanged | EniChanged | EipChanged) -> bool:
        """Take a newer revision of a resource; whether the ports may have changed."""
        if isinstance(record, EipChanged):
            return False
        key = f"{record.type}:{_resource_id(record)}"
        if record.revision < self._revisions.get(key, -1):
            return False
        self._revisions[key] = record.revision
        if isinstance(record, VSwitchChanged):
            self._vswitch_vpcs[record.vswitch_id] = record.vpc_id
        elif isinstance(record, InstanceChanged):
            self._instances[record.instance_id] = record
        else:
            self._enis[record.eni_id] = record
        self._ports = None
        return True

    def apply_mapping(self, mapping: HaVipMappingChanged) -> None:
        if mapping.version <= self._havip_versions.get(mapping.havip_id, 0):
            return
        self._havip_versions[mapping.havip_id] = mapping.version
        old = self._havips.pop(mapping.havip_id, None)
        if old is not None and self._by_address.get((old.vpc_id, old.address)) == old:
            del self._by_address[(old.vpc_id, old.address)]
        if mapping.status is HaVipStatus.DELETED:
            return
        havip = HavipAddress(
            havip_id=mapping.havip_id,
            tenant_id=mapping.tenant_id,
            vpc_id=mapping.vpc_id,
            address=parse_ipv4(mapping.ip_address),
            attached=frozenset(a.instance_id for a in mapping.attachments),
        )
        self._havips[havip.havip_id] = havip
        self._by_address[(havip.vpc_id, havip.address)] = havip

    def ports(self) -> dict[str, Port]:
        """The ports of this host's instances (and their ENIs), by port name."""
        if self._ports is None:
            self._ports = self._build_ports()
        return self._ports

    def _build_ports(self) -> dict[str, Port]:
        ports: dict[str, Port] = {}
        for instance in self._instances.values():
            if instance.host_id != self.host_id or instance.status is InstanceStatus.DELETED:
                continue
            if instance.port_name:
                ports[instance.port_name] = Port(
                    instance.port_name, instance.instance_id, instance.tenant_id, instance.vpc_id
                )
        for eni in self._enis.values():
            owner = self._instances.get(eni.instance_id)
            if eni.port_name is None or owner is None or owner.host_id != self.host_id:
                continue
            if owner.status is InstanceStatus.DELETED:
                continue
            vpc_id = self._vswitch_vpcs.get(eni.vswitch_id, owner.vpc_id)
            ports[eni.port_name] = Port(eni.port_name, owner.instance_id, owner.tenant_id, vpc_id, eni.eni_id)
        return ports

    def judge(self, port: Port, address: IPv4Address) -> Judgement:
        havip = self._by_address.get((port.vpc_id, address))
        if havip is None:
            return Judgement(Standing.NOT_A_HAVIP)
        if havip.tenant_id != port.tenant_id:
            return Judgement(Standing.UNEXPECTED, havip, f"{address} is a HAVIP of another tenant ({havip.havip_id})")
        if port.instance_id not in havip.attached:
            return Judgement(
                Standing.UNEXPECTED, havip, f"{port.instance_id} is not attached to {havip.havip_id} ({address})"
            )
        return Judgement(Standing.CLAIMANT, havip)

    def possible(self, key: ClaimKey) -> bool:
        """Whether the instance may still claim the HAVIP (attached, and on a port of this host)."""
        havip = self._havips.get(key.havip_id)
        return havip is not None and key.instance_id in havip.attached


def _resource_id(record: VSwitchChanged | InstanceChanged | EniChanged) -> str:
    if isinstance(record, VSwitchChanged):
        return record.vswitch_id
    if isinstance(record, InstanceChanged):
        return record.instance_id
    return record.eni_id
