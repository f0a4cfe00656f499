"""The reservation ledger: quota's promises, kept in Postgres without races.

Attaching locks the HAVIP's ledger row and then the instance's inventory row
(always in that order, so two attaches never deadlock). Commands for one HAVIP
therefore queue on the first lock and commands for one instance on the second,
and each reads its counts only after it holds both: two workers racing for
the last slot cannot both see it free. Creating a HAVIP takes a per-VPC
advisory lock while it picks or checks the address.

Each decision is stored with its command id in the same transaction, so a
redelivered command gets the very same answer.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_address

import asyncpg

from schemas.errors import ErrorCode, HaVipError, InventoryMiss
from schemas.ipv4 import parse_ipv4
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
from services.quota.decisions import (
    Command,
    Decision,
    command_digest,
    decision_from_json,
    decision_to_json,
    rejection,
)
from services.quota.tenant_limits import limits_for

# Codes that may only mean "our inventory copy is behind", not "no such thing".
INVENTORY_MISSES = frozenset({ErrorCode.NOT_FOUND_VSWITCH, ErrorCode.NOT_FOUND_INSTANCE, ErrorCode.NOT_FOUND_EIP})


class QuotaLedger:
    def __init__(self, pool: asyncpg.Pool, limits: rules.Limits) -> None:
        self._pool = pool
        self._limits = limits

    async def decide(self, command: Command, *, inventory_settled: bool = True) -> Decision:
        """Accept (and reserve) or reject, once per command id.

        The same command again (a redelivery, or a producer's retry) gets the
        stored decision; another command reusing the id is refused with
        IdempotentParameterMismatch, which is not stored and settles nothing.

        With `inventory_settled=False`, a rejection for a missing vSwitch,
        instance or EIP raises InventoryMiss instead of being stored, so the
        caller can wait for the inventory to catch up and ask again.
        """
        digest = command_digest(command)
        async with self._pool.acquire() as conn, conn.transaction():
            earlier = await conn.fetchrow(
                "SELECT outcome, command_sha256 FROM quota_decisions WHERE command_id = $1", command.command_id
            )
            if earlier is not None:
                if earlier["command_sha256"] not in (None, digest):
                    return rejection(
                        command,
                        ErrorCode.IDEMPOTENT_MISMATCH,
                        f"command_id {command.command_id} was already used by a different command",
                    )
                return decision_from_json(earlier["outcome"])
            try:
                decision: Decision = await self._check_and_reserve(conn, command)
            except HaVipError as exc:
                if exc.code in INVENTORY_MISSES and not inventory_settled:
                    raise InventoryMiss(exc.message) from exc
                decision = rejection(command, exc.code, exc.message)
            await conn.execute(
                "INSERT INTO quota_decisions (command_id, havip_id, outcome, command_sha256)"
                " VALUES ($1, $2, $3::jsonb, $4)",
                command.command_id,
                command.havip_id,
                decision_to_json(decision),
                digest,
            )
            return decision

    async def settle(self, command_id: str, *, applied: bool) -> None:
        """The mapping service applied (or could not apply) a command quota accepted: keep or release its reservation.

        Idempotent: every statement is keyed by the command that made the
        reservation, so a redelivered result, or one for a command whose
        reservation was already released, changes nothing.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await conn.fetchval("SELECT outcome FROM quota_decisions WHERE command_id = $1", command_id)
            if stored is None:
                return
            decision = decision_from_json(stored)
            match decision, applied:
                case HaVipDeletionAccepted(), True:
                    # Only now is the address free and the HAVIP no longer counted.
                    await conn.execute(
                        "DELETE FROM quota_havips WHERE havip_id = $1 AND deleting_command_id = $2",
                        decision.havip_id,
                        command_id,
                    )
                case HaVipDeletionAccepted(), False:
                    await conn.execute(
                        "UPDATE quota_havips SET deleting_command_id = NULL WHERE deleting_command_id = $1", command_id
                    )
                case HaVipCreationAccepted(), False:
                    # Whatever was reserved on a HAVIP the mapping service never created fails there too.
                    owned = await conn.fetchval(
                        "SELECT 1 FROM quota_havips WHERE havip_id = $1 AND command_id = $2 FOR UPDATE",
                        decision.havip_id,
                        command_id,
                    )
                    if owned:
                        await conn.execute("DELETE FROM quota_attachments WHERE havip_id = $1", decision.havip_id)
                        await conn.execute("DELETE FROM quota_havip_eips WHERE havip_id = $1", decision.havip_id)
                        await conn.execute("DELETE FROM quota_havips WHERE havip_id = $1", decision.havip_id)
                case AttachmentAccepted(), False:
                    await conn.execute("DELETE FROM quota_attachments WHERE command_id = $1", command_id)
                case EipAssociationAccepted(), False:
                    await conn.execute("DELETE FROM quota_havip_eips WHERE command_id = $1", command_id)
                case _:
                    # Detaching and releasing free what the mapping tables no longer hold either way.
                    pass

    async def _check_and_reserve(self, conn: asyncpg.Connection, command: Command) -> Accepted:
        match command:
            case CreateHaVip():
                return await self._create(conn, command)
            case AttachHaVip():
                return await self._attach(conn, command)
            case DetachHaVip():
                return await self._detach(conn, command)
            case DeleteHaVip():
                return await self._delete(conn, command)
            case AssociateEip():
                return await self._associate_eip(conn, command)
            case UnassociateEip():
                return await self._unassociate_eip(conn, command)

    async def _create(self, conn: asyncpg.Connection, command: CreateHaVip) -> HaVipCreationAccepted:
        row = await conn.fetchrow(
            "SELECT vswitch_id, tenant_id, vpc_id, cidr FROM quota_vswitches WHERE vswitch_id = $1", command.vswitch_id
        )
        if row is None or row["tenant_id"] != command.tenant_id:
            raise HaVipError(ErrorCode.NOT_FOUND_VSWITCH, f"vSwitch {command.vswitch_id} was not found")
        cidr = row["cidr"]
        if not isinstance(cidr, IPv4Network):
            raise HaVipError(ErrorCode.IP_VERSION, f"vSwitch {command.vswitch_id} is not an IPv4 network")
        vswitch = rules.VSwitch(row["vswitch_id"], row["tenant_id"], row["vpc_id"], cidr)
        # One address picker per VPC at a time; different VPCs never wait on each other.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"havip-address:{vswitch.vpc_id}")
        if await conn.fetchval("SELECT 1 FROM quota_havips WHERE havip_id = $1", command.havip_id):
            # The same answer whoever holds the id: it must not tell whose it is.
            raise HaVipError(ErrorCode.INVALID_PARAMETER, f"havip_id {command.havip_id} is already taken")
        # One count per tenant at a time, so two creates cannot both take the last slot.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"havip-count:{command.tenant_id}")
        limits = await limits_for(conn, command.tenant_id, self._limits)
        held = await conn.fetchval("SELECT count(*) FROM quota_havips WHERE tenant_id = $1", command.tenant_id)
        rules.check_havip_count(command.tenant_id, held, limits)
        used = await _addresses_in_use(conn, vswitch)
        if command.ip_address is not None:
            address = parse_ipv4(command.ip_address)
            rules.check_address_in_vswitch(address, vswitch)
            rules.check_address_free(address, used)
        else:
            address = rules.choose_free_address(vswitch, used)
        await conn.execute(
            "INSERT INTO quota_havips (havip_id, tenant_id, vpc_id, vswitch_id, ip_address, command_id)"
            " VALUES ($1, $2, $3, $4, $5::inet, $6)",
            command.havip_id,
            command.tenant_id,
            vswitch.vpc_id,
            vswitch.vswitch_id,
            str(address),
            command.command_id,
        )
        return HaVipCreationAccepted(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            havip_id=command.havip_id,
            vpc_id=vswitch.vpc_id,
            vswitch_id=vswitch.vswitch_id,
            ip_address=str(address),
            name=command.name,
            description=command.description,
        )

    async def _attach(self, conn: asyncpg.Connection, command: AttachHaVip) -> AttachmentAccepted:
        havip = await _lock_havip(conn, command.havip_id, command.tenant_id)
        target = await _lock_target(conn, command.target_id)
        counts = await conn.fetchrow(
            "SELECT"
            " (SELECT count(*) FROM quota_attachments WHERE havip_id = $1) AS havip_attachments,"
            " (SELECT count(DISTINCT havip_id) FROM quota_attachments WHERE instance_id = $2) AS instance_havips,"
            " EXISTS (SELECT 1 FROM quota_attachments WHERE havip_id = $1 AND instance_id = $2) AS attached",
            havip.havip_id,
            target.instance_id,
        )
        rules.check_attachment(
            havip,
            target,
            instance_already_attached=counts["attached"],
            havip_attachments=counts["havip_attachments"],
            instance_havips=counts["instance_havips"],
            limits=await limits_for(conn, command.tenant_id, self._limits),
        )
        await conn.execute(
            "INSERT INTO quota_attachments (havip_id, target_id, instance_id, command_id) VALUES ($1, $2, $3, $4)",
            havip.havip_id,
            target.target_id,
            target.instance_id,
            command.command_id,
        )
        return AttachmentAccepted(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            havip_id=havip.havip_id,
            target_id=target.target_id,
            instance_id=target.instance_id,
            eni_id=target.eni_id,
        )

    async def _detach(self, conn: asyncpg.Connection, command: DetachHaVip) -> DetachmentAccepted:
        havip = await _lock_havip(conn, command.havip_id, command.tenant_id)
        status = await conn.execute(
            "DELETE FROM quota_attachments WHERE havip_id = $1 AND target_id = $2", havip.havip_id, command.target_id
        )
        if status == "DELETE 0":
            raise HaVipError(ErrorCode.NOT_FOUND_ATTACHMENT, f"{command.target_id} is not attached to {havip.havip_id}")
        return DetachmentAccepted(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            havip_id=havip.havip_id,
            target_id=command.target_id,
        )

    async def _delete(self, conn: asyncpg.Connection, command: DeleteHaVip) -> HaVipDeletionAccepted:
        havip = await _lock_havip(conn, command.havip_id, command.tenant_id)
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM quota_attachments WHERE havip_id = $1) AS attachments,"
            " (SELECT count(*) FROM quota_havip_eips WHERE havip_id = $1) AS eips",
            havip.havip_id,
        )
        rules.check_deletable(havip, attachments=counts["attachments"], eips=counts["eips"])
        # The address and the count stay reserved until the mapping service has applied the delete.
        await conn.execute(
            "UPDATE quota_havips SET deleting_command_id = $2 WHERE havip_id = $1", havip.havip_id, command.command_id
        )
        return HaVipDeletionAccepted(
            command_id=command.command_id, tenant_id=command.tenant_id, havip_id=havip.havip_id
        )

    async def _associate_eip(self, conn: asyncpg.Connection, command: AssociateEip) -> EipAssociationAccepted:
        havip = await _lock_havip(conn, command.havip_id, command.tenant_id)
        # Locked after the HAVIP, always in this order: two HAVIPs racing for one EIP queue here.
        row = await conn.fetchrow(
            "SELECT e.eip_id, e.tenant_id, host(e.ip_address) AS ip_address, h.havip_id AS held_by"
            " FROM quota_eips e LEFT JOIN quota_havip_eips h ON h.eip_id = e.eip_id"
            " WHERE e.eip_id = $1 FOR UPDATE OF e",
            command.eip_id,
        )
        if row is None:
            raise HaVipError(ErrorCode.NOT_FOUND_EIP, f"{command.eip_id} was not found")
        eip = rules.Eip(row["eip_id"], row["tenant_id"], row["ip_address"], row["held_by"])
        held = await conn.fetchval("SELECT count(*) FROM quota_havip_eips WHERE havip_id = $1", havip.havip_id)
        limits = await limits_for(conn, command.tenant_id, self._limits)
        rules.check_eip_association(havip, eip, havip_eips=held, limits=limits)
        await conn.execute(
            "INSERT INTO quota_havip_eips (eip_id, havip_id, command_id) VALUES ($1, $2, $3)",
            eip.eip_id,
            havip.havip_id,
            command.command_id,
        )
        return EipAssociationAccepted(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            havip_id=havip.havip_id,
            eip_id=eip.eip_id,
            eip_address=eip.ip_address,
        )

    async def _unassociate_eip(self, conn: asyncpg.Connection, command: UnassociateEip) -> EipUnassociationAccepted:
        havip = await _lock_havip(conn, command.havip_id, command.tenant_id)
        status = await conn.execute(
            "DELETE FROM quota_havip_eips WHERE havip_id = $1 AND eip_id = $2", havip.havip_id, command.eip_id
        )
        if status == "DELETE 0":
            raise HaVipError(ErrorCode.NOT_FOUND_EIP, f"{command.eip_id} is not associated with {havip.havip_id}")
        return EipUnassociationAccepted(
            command_id=command.command_id, tenant_id=command.tenant_id, havip_id=havip.havip_id, eip_id=command.eip_id
        )


async def _lock_havip(conn: asyncpg.Connection, havip_id: str, tenant_id: str) -> rules.ReservedHaVip:
    row = await conn.fetchrow(
        "SELECT havip_id, tenant_id, vswitch_id, deleting_command_id FROM quota_havips WHERE havip_id = $1 FOR UPDATE",
        havip_id,
    )
    if row is None or row["tenant_id"] != tenant_id:
        raise HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"{havip_id} was not found")
    return rules.ReservedHaVip(
        row["havip_id"], row["tenant_id"], row["vswitch_id"], deleting=row["deleting_command_id"] is not None
    )


async def _lock_target(conn: asyncpg.Connection, target_id: str) -> rules.Target:
    eni = await conn.fetchrow("SELECT eni_id, instance_id, vswitch_id FROM quota_enis WHERE eni_id = $1", target_id)
    instance_id = eni["instance_id"] if eni else target_id
    row = await conn.fetchrow(
        "SELECT instance_id, tenant_id, vswitch_id, status FROM quota_instances WHERE instance_id = $1 FOR UPDATE",
        instance_id,
    )
    if row is None:
        raise HaVipError(ErrorCode.NOT_FOUND_INSTANCE, f"{target_id} was not found")
    return rules.Target(
        target_id=target_id,
        instance_id=row["instance_id"],
        eni_id=eni["eni_id"] if eni else None,
        tenant_id=row["tenant_id"],
        vswitch_id=eni["vswitch_id"] if eni else row["vswitch_id"],
        instance_status=row["status"],
    )


async def _addresses_in_use(conn: asyncpg.Connection, vswitch: rules.VSwitch) -> set[IPv4Address]:
    rows = await conn.fetch(
        "SELECT host(ip_address) AS ip FROM quota_havips WHERE vpc_id = $1"
        " UNION SELECT host(private_ip) FROM quota_instances WHERE vpc_id = $1"
        " UNION SELECT host(e.private_ip) FROM quota_enis e JOIN quota_vswitches v ON v.vswitch_id = e.vswitch_id"
        " WHERE v.vpc_id = $1",
        vswitch.vpc_id,
    )
    found = {ip_address(r["ip"]) for r in rows}
    return {a for a in found if isinstance(a, IPv4Address)}
