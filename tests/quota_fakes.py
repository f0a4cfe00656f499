"""Quota's ledger store in memory: plain dicts, the semantics of services/quota/postgres_store.py.

One transaction at a time (a lock held for the whole block), so what PostgreSQL's row and
advisory locks make of racing transactions, one after the other, is all this store ever does.
A block that raises leaves the tables as they were. tests/contract/quota_store.py holds both
stores to the same behaviour.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address, ip_network
from typing import TypeVar

from schemas.messages import (
    AttachmentAccepted,
    EipAssociationAccepted,
    EipChanged,
    EniChanged,
    HaVipCreationAccepted,
    HaVipDeletionAccepted,
    InstanceChanged,
    VSwitchChanged,
)
from services.quota import releases, rules
from services.quota.decisions import Decision, StoredDecision, decision_from_json, decision_to_json
from services.quota.store import AttachmentCounts, Dependents
from services.runtime.inventory import InventoryChange


@dataclass
class _HaVip:
    accepted: HaVipCreationAccepted
    deleting_command_id: str | None = None


@dataclass(frozen=True)
class _Attachment:
    instance_id: str
    command_id: str


@dataclass(frozen=True)
class _HaVipEip:
    havip_id: str
    command_id: str


@dataclass
class _Tables:
    vswitches: dict[str, VSwitchChanged] = field(default_factory=dict)
    instances: dict[str, InstanceChanged] = field(default_factory=dict)
    enis: dict[str, EniChanged] = field(default_factory=dict)
    eips: dict[str, EipChanged] = field(default_factory=dict)
    limits: dict[str, dict[str, int | None]] = field(default_factory=dict)
    havips: dict[str, _HaVip] = field(default_factory=dict)
    attachments: dict[tuple[str, str], _Attachment] = field(default_factory=dict)  # (havip_id, target_id)
    havip_eips: dict[str, _HaVipEip] = field(default_factory=dict)  # by eip_id
    decisions: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # outcome as JSON, digest


class MemoryLedgerStore:
    def __init__(self) -> None:
        self.tables = _Tables()
        self._one_at_a_time = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryLedgerTransaction]:
        async with self._one_at_a_time:
            before = copy.deepcopy(self.tables)
            try:
                yield MemoryLedgerTransaction(self.tables)
            except BaseException:
                self.tables = before
                raise

    def record_inventory(self, change: InventoryChange) -> None:
        """The inventory copy as the quota worker keeps it (newest revision wins), for tests to seed."""
        match change:
            case VSwitchChanged():
                _newer(self.tables.vswitches, change.vswitch_id, change)
            case InstanceChanged():
                _newer(self.tables.instances, change.instance_id, change)
            case EniChanged():
                _newer(self.tables.enis, change.eni_id, change)
            case EipChanged():
                _newer(self.tables.eips, change.eip_id, change)

    def set_limits(self, tenant_id: str, overrides: Mapping[str, int | None]) -> None:
        self.tables.limits.setdefault(tenant_id, {}).update(overrides)


_Change = TypeVar("_Change", VSwitchChanged, InstanceChanged, EniChanged, EipChanged)


def _newer(table: dict[str, _Change], key: str, change: _Change) -> None:
    if key not in table or table[key].revision < change.revision:
        table[key] = change


class MemoryLedgerTransaction:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    async def decision(self, command_id: str) -> StoredDecision | None:
        stored = self._t.decisions.get(command_id)
        return None if stored is None else StoredDecision(decision_from_json(stored[0]), stored[1])

    async def record_decision(self, command_id: str, havip_id: str, decision: Decision, digest: str) -> None:
        if command_id in self._t.decisions:
            raise KeyError(f"duplicate key: quota_decisions {command_id}")
        self._t.decisions[command_id] = (decision_to_json(decision), digest)

    async def vswitch(self, vswitch_id: str) -> rules.InventoryVSwitch | None:
        v = self._t.vswitches.get(vswitch_id)
        return None if v is None else rules.InventoryVSwitch(v.vswitch_id, v.tenant_id, v.vpc_id, ip_network(v.cidr))

    async def eni(self, eni_id: str) -> rules.InventoryEni | None:
        e = self._t.enis.get(eni_id)
        return None if e is None else rules.InventoryEni(e.eni_id, e.instance_id, e.vswitch_id)

    async def lock_instance(self, instance_id: str) -> rules.InventoryInstance | None:
        i = self._t.instances.get(instance_id)
        return None if i is None else rules.InventoryInstance(i.instance_id, i.tenant_id, i.vswitch_id, i.status.value)

    async def lock_eip(self, eip_id: str) -> rules.Eip | None:
        e = self._t.eips.get(eip_id)
        if e is None:
            return None
        held = self._t.havip_eips.get(eip_id)
        return rules.Eip(e.eip_id, e.tenant_id, str(ip_address(e.ip_address)), held.havip_id if held else None)

    async def addresses_in_use(self, vpc_id: str) -> set[IPv4Address]:
        vswitches = {v.vswitch_id for v in self._t.vswitches.values() if v.vpc_id == vpc_id}
        found = {
            *(ip_address(h.accepted.ip_address) for h in self._t.havips.values() if h.accepted.vpc_id == vpc_id),
            *(ip_address(i.private_ip) for i in self._t.instances.values() if i.vpc_id == vpc_id),
            *(ip_address(e.private_ip) for e in self._t.enis.values() if e.vswitch_id in vswitches),
        }
        return {a for a in found if isinstance(a, IPv4Address)}

    async def lock_vpc_addresses(self, vpc_id: str) -> None:
        pass  # one transaction at a time already

    async def lock_tenant_havips(self, tenant_id: str) -> None:
        pass  # one transaction at a time already

    async def limits(self, tenant_id: str, defaults: rules.Limits) -> rules.Limits:
        overrides = self._t.limits.get(tenant_id)
        return defaults if overrides is None else rules.limits_with(defaults, overrides)

    async def havip_taken(self, havip_id: str) -> bool:
        return havip_id in self._t.havips

    async def havips_held(self, tenant_id: str) -> int:
        return sum(h.accepted.tenant_id == tenant_id for h in self._t.havips.values())

    async def lock_havip(self, havip_id: str) -> rules.ReservedHaVip | None:
        h = self._t.havips.get(havip_id)
        if h is None:
            return None
        a = h.accepted
        return rules.ReservedHaVip(a.havip_id, a.tenant_id, a.vswitch_id, deleting=h.deleting_command_id is not None)

    async def attachment_counts(self, havip_id: str, instance_id: str) -> AttachmentCounts:
        attachments = self._t.attachments.items()
        return AttachmentCounts(
            havip_attachments=sum(h == havip_id for (h, _), _a in attachments),
            instance_havips=len({h for (h, _), a in attachments if a.instance_id == instance_id}),
            attached=any(h == havip_id and a.instance_id == instance_id for (h, _), a in attachments),
        )

    async def dependents(self, havip_id: str) -> Dependents:
        return Dependents(
            attachments=sum(h == havip_id for h, _ in self._t.attachments),
            eips=await self.eips_held(havip_id),
        )

    async def eips_held(self, havip_id: str) -> int:
        return sum(e.havip_id == havip_id for e in self._t.havip_eips.values())

    async def reserve_havip(self, accepted: HaVipCreationAccepted) -> None:
        if accepted.havip_id in self._t.havips:
            raise KeyError(f"duplicate key: quota_havips {accepted.havip_id}")
        self._t.havips[accepted.havip_id] = _HaVip(accepted)

    async def reserve_attachment(self, accepted: AttachmentAccepted) -> None:
        key = (accepted.havip_id, accepted.target_id)
        if accepted.havip_id not in self._t.havips or key in self._t.attachments:
            raise KeyError(f"quota_attachments {key}: no such HAVIP, or a duplicate")
        self._t.attachments[key] = _Attachment(accepted.instance_id, accepted.command_id)

    async def reserve_eip(self, accepted: EipAssociationAccepted) -> None:
        if accepted.havip_id not in self._t.havips or accepted.eip_id in self._t.havip_eips:
            raise KeyError(f"quota_havip_eips {accepted.eip_id}: no such HAVIP, or a duplicate")
        self._t.havip_eips[accepted.eip_id] = _HaVipEip(accepted.havip_id, accepted.command_id)

    async def mark_deleting(self, accepted: HaVipDeletionAccepted) -> None:
        if (h := self._t.havips.get(accepted.havip_id)) is not None:
            h.deleting_command_id = accepted.command_id

    async def free_attachment(self, havip_id: str, target_id: str) -> bool:
        return self._t.attachments.pop((havip_id, target_id), None) is not None

    async def free_eip(self, havip_id: str, eip_id: str) -> bool:
        held = self._t.havip_eips.get(eip_id)
        if held is None or held.havip_id != havip_id:
            return False
        del self._t.havip_eips[eip_id]
        return True

    async def release(self, release: releases.Release) -> None:
        t = self._t
        match release:
            case releases.FreeDeletedHaVip():
                h = t.havips.get(release.havip_id)
                if h is not None and h.deleting_command_id == release.command_id:
                    del t.havips[release.havip_id]
            case releases.KeepHaVip():
                for h in t.havips.values():
                    if h.deleting_command_id == release.command_id:
                        h.deleting_command_id = None
            case releases.FreeCreatedHaVip():
                h = t.havips.get(release.havip_id)
                if h is not None and h.accepted.command_id == release.command_id:
                    t.attachments = {k: a for k, a in t.attachments.items() if k[0] != release.havip_id}
                    t.havip_eips = {k: e for k, e in t.havip_eips.items() if e.havip_id != release.havip_id}
                    del t.havips[release.havip_id]
            case releases.FreeAttachment():
                t.attachments = {k: a for k, a in t.attachments.items() if a.command_id != release.command_id}
            case releases.FreeEipAssociation():
                t.havip_eips = {k: e for k, e in t.havip_eips.items() if e.command_id != release.command_id}
