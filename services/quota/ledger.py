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

import json
from ipaddress import IPv4Address, IPv4Network, ip_address

import asyncpg

from schemas.errors import ErrorCode, HaVipError, InventoryMiss
from schemas.ipv4 import parse_ipv4
from schemas.messages import (
    AttachHaVip,
    AttachmentAccepted,
    CommandRejected,
    CreateHaVip,
    DetachHaVip,
    DetachmentAccepted,
    HaVipCreationAccepted,
)
from services.quota import rules

Command = CreateHaVip | AttachHaVip | DetachHaVip
Accepted = HaVipCreationAccepted | AttachmentAccepted | DetachmentAccepted
Decision = Accepted | CommandRejected

# Codes that may only mean "our inventory copy is behind", not "no such thing".
INVENTORY_MISSES = frozenset({ErrorCode.NOT_FOUND_VSWITCH, ErrorCode.NOT_FOUND_INSTANCE})


class QuotaLedger:
    def __init__(self, pool: asyncpg.Pool, limits: rules.Limits) -> None:
        self._pool = pool
        self._limits = limits

    async def decide(self, command: Command, *, inventory_settled: bool = True) -> Decision:
        """Accept (and reserve) or reject, once per command id.

        With `inventory_settled=False`, a rejection for a missing vSwitch or
        instance raises InventoryMiss instead of being stored, so the caller
        can wait for the inventory to catch up and ask again.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            earlier = await conn.fetchval(
                "SELECT outcome FROM quota_decisions WHERE command_id = $1", command.command_id
            )
            if earlier is not None:
                return _decision_from_json(earlier)
            try:
                decision: Decision = await self._check_and_reserve(conn, command)
            except HaVipError as exc:
                if exc.code in INVENTORY_MISSES and not inventory_settled:
                    raise InventoryMiss(exc.message) from exc
                decision = CommandRejected(
                    command_id=command.command_id,
                    havip_id=command.havip_id,
                    stage="quota",
                    code=exc.code,
                    reason=exc.message,
                )
            await conn.execute(
                "INSERT INTO quota_decisions (command_id, havip_id, outcome) VALUES ($1, $2, $3::jsonb)",
                command.command_id,
                command.havip_id,
                _decision_to_json(decision),
            )
            return decision

    async def _check_and_reserve(self, conn: asyncpg.Connection, command: Command) -> Accepted:
        match command:
            case CreateHaVip():
                return await self._create(conn, command)
            case AttachHaVip():
                return await self._attach(conn, command)
            case DetachHaVip():
                return await self._detach(conn, command)

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
            raise HaVipError(ErrorCode.HAVIP_STATUS, f"{command.havip_id} already exists")
        used = await _addresses_in_use(conn, vswitch)
        if command.ip_address is not None:
            address = parse_ipv4(command.ip_address)
            rules.check_address_in_vswitch(address, vswitch)
            rules.check_address_free(address, used)
        else:
            address = rules.choose_free_address(vswitch, used)
        await conn.execute(
            "INSERT INTO quota_havips (havip_id, tenant_id, vpc_id, vswitch_id, ip_address)"
            " VALUES ($1, $2, $3, $4, $5::inet)",
            command.havip_id,
            command.tenant_id,
            vswitch.vpc_id,
            vswitch.vswitch_id,
            str(address),
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
            limits=self._limits,
        )
        await conn.execute(
            "INSERT INTO quota_attachments (havip_id, target_id, instance_id) VALUES ($1, $2, $3)",
            havip.havip_id,
            target.target_id,
            target.instance_id,
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


async def _lock_havip(conn: asyncpg.Connection, havip_id: str, tenant_id: str) -> rules.ReservedHaVip:
    row = await conn.fetchrow(
        "SELECT havip_id, tenant_id, vswitch_id FROM quota_havips WHERE havip_id = $1 FOR UPDATE", havip_id
    )
    if row is None or row["tenant_id"] != tenant_id:
        raise HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"{havip_id} was not found")
    return rules.ReservedHaVip(row["havip_id"], row["tenant_id"], row["vswitch_id"])


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


def _decision_to_json(decision: Decision) -> str:
    return json.dumps({"type": decision.type, "message": decision.model_dump(mode="json")})


_DECISION_TYPES: dict[str, type[Decision]] = {
    cls.model_fields["type"].default: cls
    for cls in (HaVipCreationAccepted, AttachmentAccepted, DetachmentAccepted, CommandRejected)
}


def _decision_from_json(text: str) -> Decision:
    stored = json.loads(text)
    return _DECISION_TYPES[stored["type"]].model_validate(stored["message"])
