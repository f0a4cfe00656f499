"""Applying what quota accepted to the mapping tables, or saying why it cannot be.

Quota decides against its ledger; the mapping tables can still disagree in
ways quota cannot see (its inventory copy said an instance was running, ours
already knows it was deleted). Such a command is refused here with a code,
the refusal is kept so a redelivery gets the same answer, and quota, reading
the refusal on `havip.command-results`, releases what it reserved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from schemas.errors import ErrorCode, HaVipError
from schemas.messages import (
    Accepted,
    AttachmentAccepted,
    CommandType,
    DetachmentAccepted,
    EipAssociationAccepted,
    EipUnassociationAccepted,
    HaVipCreationAccepted,
    HaVipDeletionAccepted,
    HaVipStatus,
    InstanceStatus,
)
from services.mapping.election import Contest, withdrawn_on_detach
from services.mapping.store import MappingTransaction
from services.quota.rules import check_no_dependants

# Which tenant command each accepted command carries out (results name the tenant's command).
COMMAND_TYPE: dict[type[Accepted], CommandType] = {
    HaVipCreationAccepted: "CreateHaVip",
    AttachmentAccepted: "AttachHaVip",
    DetachmentAccepted: "DetachHaVip",
    HaVipDeletionAccepted: "DeleteHaVip",
    EipAssociationAccepted: "AssociateEip",
    EipUnassociationAccepted: "UnassociateEip",
}

# Re-elects the HAVIP's owner from `before` and the tables as they are now, and bumps its version.
Reelect = Callable[[MappingTransaction, str, Contest], Awaitable[object]]


async def apply_accepted(tx: MappingTransaction, command: Accepted, reelect: Reelect) -> None:
    """Change the tables as `command` says, inside the caller's transaction; HaVipError when it cannot apply."""
    if isinstance(command, HaVipCreationAccepted):
        await tx.create_havip(command)
        return
    havip = await tx.lock_havip(command.havip_id)
    if havip is None or havip.tenant_id != command.tenant_id:
        # Quota accepted it, so its create was accepted first on the same partition; only a bug gets here.
        raise HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"{command.havip_id} does not exist in the mapping tables")
    if havip.status is HaVipStatus.DELETED:
        raise HaVipError(ErrorCode.HAVIP_STATUS, f"{command.havip_id} is deleted")
    before = await tx.load_contest(command.havip_id, havip.owner_target_id)
    match command:
        case AttachmentAccepted():
            # Deleted is final in the inventory: quota's copy may not have seen it yet, ours has.
            # (An instance our copy does not know yet is fine: it is on its way.)
            if await tx.instance_status(command.instance_id) is InstanceStatus.DELETED:
                raise HaVipError(ErrorCode.INSTANCE_STATUS, f"instance {command.instance_id} was deleted")
            await tx.add_attachment(command)
        case DetachmentAccepted():
            await tx.remove_attachment(command.havip_id, command.target_id)
            await tx.save_reports(
                {(command.havip_id, r.instance_id): r for r in withdrawn_on_detach(before, command.target_id)}
            )
        case HaVipDeletionAccepted():
            attachments, eips = await tx.dependants(command.havip_id)
            check_no_dependants(command.havip_id, attachments=attachments, eips=eips)
            # The row stays (as Deleted) so its owner history can still be read and a late,
            # older state of it never comes back at a forwarder.
            await tx.mark_deleted(command.havip_id)
            return  # nothing left to elect: no attachments
        case EipAssociationAccepted():
            holder = await tx.eip_holder(command.eip_id)
            if holder is not None and holder != command.havip_id:
                raise HaVipError(ErrorCode.EIP_IN_USE, f"{command.eip_id} is associated with another HAVIP")
            await tx.associate_eip(command)
        case EipUnassociationAccepted():
            await tx.unassociate_eip(command.havip_id, command.eip_id)
    # An EIP change moves no owner, but it is a new state to publish: a new version either way.
    await reelect(tx, command.havip_id, before)
