"""The reservation ledger: quota's promises, decided once per command and kept without races.

Attaching locks the HAVIP's reservation and then the instance (always in that
order, so two attaches never deadlock). Commands for one HAVIP therefore queue
on the first lock and commands for one instance on the second, and each reads
its counts only after it holds both: two workers racing for the last slot
cannot both see it free. Creating a HAVIP locks the VPC's address picking
while it picks or checks the address, then the tenant's HAVIP count.

Each decision is stored with its command id in the same transaction, so a
redelivered command gets the very same answer. The rules are in
services/quota/rules.py and releases.py; storage is a LedgerStore
(services/quota/store.py).
"""

from __future__ import annotations

from schemas.errors import HaVipError, InventoryMiss
from schemas.messages import (
    Accepted,
    AssociateEip,
    AttachHaVip,
    AttachmentAccepted,
    CreateHaVip,
    DeleteHaVip,
    DetachHaVip,
    DetachmentAccepted,
    EipAssociationAccepted,
    EipUnassociationAccepted,
    HaVipCreationAccepted,
    HaVipDeletionAccepted,
    UnassociateEip,
)
from services.quota import rules
from services.quota.decisions import Command, Decision, command_digest, rejection, replayed
from services.quota.releases import release_on
from services.quota.store import LedgerStore, LedgerTransaction


class QuotaLedger:
    def __init__(self, store: LedgerStore, limits: rules.Limits) -> None:
        self._store = store
        self._limits = limits

    async def decide(self, command: Command, *, inventory_settled: bool = True) -> Decision:
        """Accept (and reserve) or reject, once per command id (decisions.replayed says how again).

        With `inventory_settled=False`, a rejection for a missing vSwitch,
        instance or EIP raises InventoryMiss instead of being stored, so the
        caller can wait for the inventory to catch up and ask again.
        """
        digest = command_digest(command)
        async with self._store.transaction() as book:
            earlier = await book.decision(command.command_id)
            if earlier is not None:
                return replayed(command, digest, earlier)
            try:
                decision: Decision = await self._check_and_reserve(book, command)
            except HaVipError as exc:
                if exc.code in rules.INVENTORY_MISSES and not inventory_settled:
                    raise InventoryMiss(exc.message) from exc
                decision = rejection(command, exc.code, exc.message)
            await book.record_decision(command.command_id, command.havip_id, decision, digest)
            return decision

    async def settle(self, command_id: str, *, applied: bool) -> None:
        """The mapping service applied (or could not apply) a command quota accepted: keep or release its reservation.

        Idempotent (releases.py says why): a redelivered result changes nothing.
        """
        async with self._store.transaction() as book:
            stored = await book.decision(command_id)
            if stored is None:
                return
            release = release_on(stored.decision, applied=applied)
            if release is not None:
                await book.release(release)

    async def _check_and_reserve(self, book: LedgerTransaction, command: Command) -> Accepted:
        match command:
            case CreateHaVip():
                return await self._create(book, command)
            case AttachHaVip():
                return await self._attach(book, command)
            case DetachHaVip():
                return await self._detach(book, command)
            case DeleteHaVip():
                return await self._delete(book, command)
            case AssociateEip():
                return await self._associate_eip(book, command)
            case UnassociateEip():
                return await self._unassociate_eip(book, command)

    async def _create(self, book: LedgerTransaction, command: CreateHaVip) -> HaVipCreationAccepted:
        vswitch = rules.usable_vswitch(command.vswitch_id, command.tenant_id, await book.vswitch(command.vswitch_id))
        # One address picker per VPC at a time; different VPCs never wait on each other.
        await book.lock_vpc_addresses(vswitch.vpc_id)
        rules.check_havip_id_free(command.havip_id, taken=await book.havip_taken(command.havip_id))
        # One count per tenant at a time, so two creates cannot both take the last slot.
        await book.lock_tenant_havips(command.tenant_id)
        limits = await book.limits(command.tenant_id, self._limits)
        rules.check_havip_count(command.tenant_id, await book.havips_held(command.tenant_id), limits)
        address = rules.havip_address(command.ip_address, vswitch, await book.addresses_in_use(vswitch.vpc_id))
        accepted = HaVipCreationAccepted(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            havip_id=command.havip_id,
            vpc_id=vswitch.vpc_id,
            vswitch_id=vswitch.vswitch_id,
            ip_address=str(address),
            name=command.name,
            description=command.description,
        )
        await book.reserve_havip(accepted)
        return accepted

    async def _attach(self, book: LedgerTransaction, command: AttachHaVip) -> AttachmentAccepted:
        havip = rules.visible_havip(command.havip_id, command.tenant_id, await book.lock_havip(command.havip_id))
        eni = await book.eni(command.target_id)
        instance = await book.lock_instance(rules.instance_id_of(command.target_id, eni))
        target = rules.attachment_target(command.target_id, eni, instance)
        counts = await book.attachment_counts(havip.havip_id, target.instance_id)
        rules.check_attachment(
            havip,
            target,
            instance_already_attached=counts.attached,
            havip_attachments=counts.havip_attachments,
            instance_havips=counts.instance_havips,
            limits=await book.limits(command.tenant_id, self._limits),
        )
        accepted = AttachmentAccepted(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            havip_id=havip.havip_id,
            target_id=target.target_id,
            instance_id=target.instance_id,
            eni_id=target.eni_id,
        )
        await book.reserve_attachment(accepted)
        return accepted

    async def _detach(self, book: LedgerTransaction, command: DetachHaVip) -> DetachmentAccepted:
        havip = rules.visible_havip(command.havip_id, command.tenant_id, await book.lock_havip(command.havip_id))
        detached = await book.free_attachment(havip.havip_id, command.target_id)
        rules.check_was_attached(detached=detached, havip_id=havip.havip_id, target_id=command.target_id)
        return DetachmentAccepted(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            havip_id=havip.havip_id,
            target_id=command.target_id,
        )

    async def _delete(self, book: LedgerTransaction, command: DeleteHaVip) -> HaVipDeletionAccepted:
        havip = rules.visible_havip(command.havip_id, command.tenant_id, await book.lock_havip(command.havip_id))
        dependents = await book.dependents(havip.havip_id)
        rules.check_deletable(havip, attachments=dependents.attachments, eips=dependents.eips)
        accepted = HaVipDeletionAccepted(
            command_id=command.command_id, tenant_id=command.tenant_id, havip_id=havip.havip_id
        )
        # The address and the count stay reserved until the mapping service has applied the delete.
        await book.mark_deleting(accepted)
        return accepted

    async def _associate_eip(self, book: LedgerTransaction, command: AssociateEip) -> EipAssociationAccepted:
        havip = rules.visible_havip(command.havip_id, command.tenant_id, await book.lock_havip(command.havip_id))
        # Locked after the HAVIP, always in this order: two HAVIPs racing for one EIP queue here.
        eip = rules.eip_of(command.eip_id, await book.lock_eip(command.eip_id))
        held = await book.eips_held(havip.havip_id)
        limits = await book.limits(command.tenant_id, self._limits)
        rules.check_eip_association(havip, eip, havip_eips=held, limits=limits)
        accepted = EipAssociationAccepted(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            havip_id=havip.havip_id,
            eip_id=eip.eip_id,
            eip_address=eip.ip_address,
        )
        await book.reserve_eip(accepted)
        return accepted

    async def _unassociate_eip(self, book: LedgerTransaction, command: UnassociateEip) -> EipUnassociationAccepted:
        havip = rules.visible_havip(command.havip_id, command.tenant_id, await book.lock_havip(command.havip_id))
        released = await book.free_eip(havip.havip_id, command.eip_id)
        rules.check_was_associated(released=released, havip_id=havip.havip_id, eip_id=command.eip_id)
        return EipUnassociationAccepted(
            command_id=command.command_id, tenant_id=command.tenant_id, havip_id=havip.havip_id, eip_id=command.eip_id
        )
