"""Applying what quota accepted to the mapping tables, or saying why it cannot be.

Quota decides against its ledger; the mapping tables can still disagree in
ways quota cannot see (its inventory copy said an instance was running, ours
already knows it was deleted). Such a command is refused here with a code,
the refusal is kept so a redelivery gets the same answer, and quota, reading
the refusal on `havip.command-results`, releases what it reserved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

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
    VrrpState,
)
from services.mapping import store
from services.mapping.election import Contest

AcceptedCommand = Accepted

# Which tenant command each accepted command carries out (results name the tenant's command).
COMMAND_TYPE: dict[type[AcceptedCommand], CommandType] = {
    HaVipCreationAccepted: "CreateHaVip",
    AttachmentAccepted: "AttachHaVip",
    DetachmentAccepted: "DetachHaVip",
    HaVipDeletionAccepted: "DeleteHaVip",
    EipAssociationAccepted: "AssociateEip",
    EipUnassociationAccepted: "UnassociateEip",
}

# Re-elects the HAVIP's owner from `before` and the tables as they are now, and bumps its version.
Reelect = Callable[[asyncpg.Connection, str, Contest], Awaitable[object]]


async def apply_accepted(conn: asyncpg.Connection, command: AcceptedCommand, reelect: Reelect) -> None:
    """Change the tables as `command` says, inside the caller's transaction; HaVipError when it cannot apply."""
    if isinstance(command, HaVipCreationAccepted):
        await conn.execute(
            "INSERT INTO havips (havip_id, tenant_id, vpc_id, vswitch_id, ip_address, name, description,"
            " status, version) VALUES ($1, $2, $3, $4, $5::inet, $6, $7, $8, 1)"
            " ON CONFLICT (havip_id) DO NOTHING",
            command.havip_id,
            command.tenant_id,
            command.vpc_id,
            command.vswitch_id,
            command.ip_address,
            command.name,
            command.description,
            HaVipStatus.AVAILABLE.value,
        )
        return
    havip = await store.lock_havip(conn, command.havip_id)
    if havip is None or havip["tenant_id"] != command.tenant_id:
        # Quota accepted it, so its create was accepted first on the same partition; only a bug gets here.
        raise HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"{command.havip_id} does not exist in the mapping tables")
    if havip["status"] == HaVipStatus.DELETED:
        raise HaVipError(ErrorCode.HAVIP_STATUS, f"{command.havip_id} is deleted")
    before = await store.load_contest(conn, command.havip_id, havip["owner_target_id"])
    match command:
        case AttachmentAccepted():
            await _attach(conn, command)
        case DetachmentAccepted():
            await _detach(conn, command)
        case HaVipDeletionAccepted():
            await _delete(conn, command)
            return  # nothing left to elect: no attachments
        case EipAssociationAccepted():
            holder = await conn.fetchval("SELECT havip_id FROM havip_eips WHERE eip_id = $1", command.eip_id)
            if holder is not None and holder != command.havip_id:
                raise HaVipError(ErrorCode.EIP_IN_USE, f"{command.eip_id} is associated with another HAVIP")
            await conn.execute(
                "INSERT INTO havip_eips (eip_id, havip_id, ip_address) VALUES ($1, $2, $3::inet)"
                " ON CONFLICT (eip_id) DO NOTHING",
                command.eip_id,
                command.havip_id,
                command.eip_address,
            )
        case EipUnassociationAccepted():
            await conn.execute(
                "DELETE FROM havip_eips WHERE eip_id = $1 AND havip_id = $2", command.eip_id, command.havip_id
            )
    # An EIP change moves no owner, but it is a new state to publish: a new version either way.
    await reelect(conn, command.havip_id, before)


async def _attach(conn: asyncpg.Connection, command: AttachmentAccepted) -> None:
    # Deleted is final in the inventory: quota's copy may not have seen it yet, ours has.
    # (An instance our copy does not know yet is fine: it is on its way.)
    status = await conn.fetchval("SELECT status FROM instances WHERE instance_id = $1", command.instance_id)
    if status == InstanceStatus.DELETED:
        raise HaVipError(ErrorCode.INSTANCE_STATUS, f"instance {command.instance_id} was deleted")
    await conn.execute(
        "INSERT INTO attachments (havip_id, target_id, instance_id, eni_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        command.havip_id,
        command.target_id,
        command.instance_id,
        command.eni_id,
    )


async def _detach(conn: asyncpg.Connection, command: DetachmentAccepted) -> None:
    detached = await conn.fetchval(
        "DELETE FROM attachments WHERE havip_id = $1 AND target_id = $2 RETURNING instance_id",
        command.havip_id,
        command.target_id,
    )
    # A detached instance's old MASTER must not count if it is attached again later,
    # and a redelivered report from before the detach must stay stale: keep its
    # sequence number, withdraw the claim.
    await conn.execute(
        "UPDATE vrrp_reports SET state = $3, expires_at = NULL WHERE havip_id = $1 AND instance_id = $2"
        " AND NOT EXISTS (SELECT 1 FROM attachments WHERE havip_id = $1 AND instance_id = $2)",
        command.havip_id,
        detached,
        VrrpState.STOP.value,
    )


async def _delete(conn: asyncpg.Connection, command: HaVipDeletionAccepted) -> None:
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM attachments WHERE havip_id = $1) AS attachments,"
        " (SELECT count(*) FROM havip_eips WHERE havip_id = $1) AS eips",
        command.havip_id,
    )
    if counts["attachments"] or counts["eips"]:
        raise HaVipError(
            ErrorCode.DEPENDENCY_HAVIP, f"{command.havip_id} still has attachments or an EIP in the mapping tables"
        )
    # The row stays (as Deleted) so its owner history can still be read and a late,
    # older state of it never comes back at a forwarder.
    await conn.execute(
        "UPDATE havips SET status = $2, owner_target_id = NULL, version = version + 1, updated_at = now()"
        " WHERE havip_id = $1",
        command.havip_id,
        HaVipStatus.DELETED.value,
    )
