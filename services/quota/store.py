"""What the ledger needs from storage: one transaction at a time, loads and saves, no rules.

`LedgerStore.transaction()` is one transaction: everything done through the
`LedgerTransaction` it yields is kept together, or, if the block raises, not
at all. The `lock_*` loads hold what they return until the transaction ends,
so counts read after them cannot change underneath; the ledger takes them in
one order (HAVIP, then instance or EIP) so two transactions never deadlock.
Counts are of the reservations held, whatever their state: a HAVIP being
deleted still counts (services/quota/releases.py says when it stops).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

from schemas.messages import AttachmentAccepted, EipAssociationAccepted, HaVipCreationAccepted, HaVipDeletionAccepted
from services.quota import rules
from services.quota.decisions import Decision, StoredDecision
from services.quota.releases import Release


@dataclass(frozen=True)
class AttachmentCounts:
    havip_attachments: int  # targets attached to the HAVIP
    instance_havips: int  # distinct HAVIPs the instance is attached to, through any of its targets
    attached: bool  # the instance is already attached to the HAVIP


@dataclass(frozen=True)
class Dependents:
    attachments: int
    eips: int


class LedgerTransaction(Protocol):
    # Decisions, one per command id.
    async def decision(self, command_id: str) -> StoredDecision | None: ...
    async def record_decision(self, command_id: str, havip_id: str, decision: Decision, digest: str) -> None: ...

    # The inventory copy.
    async def vswitch(self, vswitch_id: str) -> rules.InventoryVSwitch | None: ...
    async def eni(self, eni_id: str) -> rules.InventoryEni | None: ...
    async def lock_instance(self, instance_id: str) -> rules.InventoryInstance | None: ...
    async def lock_eip(self, eip_id: str) -> rules.Eip | None: ...
    async def addresses_in_use(self, vpc_id: str) -> set[IPv4Address]:
        """The IPv4 addresses of the VPC's HAVIPs, instances and ENIs."""
        ...

    # Locks held to the end of the transaction, for what has no row to lock yet.
    async def lock_vpc_addresses(self, vpc_id: str) -> None: ...
    async def lock_tenant_havips(self, tenant_id: str) -> None: ...

    async def limits(self, tenant_id: str, defaults: rules.Limits) -> rules.Limits: ...

    # Reservations.
    async def havip_taken(self, havip_id: str) -> bool: ...
    async def havips_held(self, tenant_id: str) -> int: ...
    async def lock_havip(self, havip_id: str) -> rules.ReservedHaVip | None: ...
    async def attachment_counts(self, havip_id: str, instance_id: str) -> AttachmentCounts: ...
    async def dependents(self, havip_id: str) -> Dependents: ...
    async def eips_held(self, havip_id: str) -> int: ...
    async def reserve_havip(self, accepted: HaVipCreationAccepted) -> None: ...
    async def reserve_attachment(self, accepted: AttachmentAccepted) -> None: ...
    async def reserve_eip(self, accepted: EipAssociationAccepted) -> None: ...
    async def mark_deleting(self, accepted: HaVipDeletionAccepted) -> None: ...
    async def free_attachment(self, havip_id: str, target_id: str) -> bool:
        """True when the target was attached (and now is not)."""
        ...

    async def free_eip(self, havip_id: str, eip_id: str) -> bool:
        """True when the EIP was associated with the HAVIP (and now is not)."""
        ...

    async def release(self, release: Release) -> None: ...


class LedgerStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[LedgerTransaction]: ...
