"""The ledger's store in PostgreSQL: each load and save is one statement, locks are row locks.

`lock_havip`, `lock_instance` and `lock_eip` read with FOR UPDATE; the VPC's
address picking and a tenant's HAVIP count, which have no row to lock, take
transaction-scoped advisory locks. All of them are released at commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, ip_address

import asyncpg

from schemas.messages import AttachmentAccepted, EipAssociationAccepted, HaVipCreationAccepted, HaVipDeletionAccepted
from services.quota import releases, rules
from services.quota.decisions import Decision, StoredDecision, decision_from_json, decision_to_json
from services.quota.store import AttachmentCounts, Dependents
from services.quota.tenant_limits import limits_for


class PostgresLedgerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresLedgerTransaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresLedgerTransaction(conn)


class PostgresLedgerTransaction:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def decision(self, command_id: str) -> StoredDecision | None:
        row = await self._conn.fetchrow(
            "SELECT outcome, command_sha256 FROM quota_decisions WHERE command_id = $1", command_id
        )
        return None if row is None else StoredDecision(decision_from_json(row["outcome"]), row["command_sha256"])

    async def record_decision(self, command_id: str, havip_id: str, decision: Decision, digest: str) -> None:
        await self._conn.execute(
            "INSERT INTO quota_decisions (command_id, havip_id, outcome, command_sha256)"
            " VALUES ($1, $2, $3::jsonb, $4)",
            command_id,
            havip_id,
            decision_to_json(decision),
            digest,
        )

    async def vswitch(self, vswitch_id: str) -> rules.InventoryVSwitch | None:
        row = await self._conn.fetchrow(
            "SELECT vswitch_id, tenant_id, vpc_id, cidr FROM quota_vswitches WHERE vswitch_id = $1", vswitch_id
        )
        return None if row is None else rules.InventoryVSwitch(*row.values())

    async def eni(self, eni_id: str) -> rules.InventoryEni | None:
        row = await self._conn.fetchrow(
            "SELECT eni_id, instance_id, vswitch_id FROM quota_enis WHERE eni_id = $1", eni_id
        )
        return None if row is None else rules.InventoryEni(*row.values())

    async def lock_instance(self, instance_id: str) -> rules.InventoryInstance | None:
        row = await self._conn.fetchrow(
            "SELECT instance_id, tenant_id, vswitch_id, status FROM quota_instances WHERE instance_id = $1 FOR UPDATE",
            instance_id,
        )
        return None if row is None else rules.InventoryInstance(*row.values())

    async def lock_eip(self, eip_id: str) -> rules.Eip | None:
        row = await self._conn.fetchrow(
            "SELECT e.eip_id, e.tenant_id, host(e.ip_address) AS ip_address, h.havip_id AS held_by"
            " FROM quota_eips e LEFT JOIN quota_havip_eips h ON h.eip_id = e.eip_id"
            " WHERE e.eip_id = $1 FOR UPDATE OF e",
            eip_id,
        )
        return None if row is None else rules.Eip(*row.values())

    async def addresses_in_use(self, vpc_id: str) -> set[IPv4Address]:
        rows = await self._conn.fetch(
            "SELECT host(ip_address) AS ip FROM quota_havips WHERE vpc_id = $1"
            " UNION SELECT host(private_ip) FROM quota_instances WHERE vpc_id = $1"
            " UNION SELECT host(e.private_ip) FROM quota_enis e JOIN quota_vswitches v ON v.vswitch_id = e.vswitch_id"
            " WHERE v.vpc_id = $1",
            vpc_id,
        )
        found = {ip_address(r["ip"]) for r in rows}
        return {a for a in found if isinstance(a, IPv4Address)}

    async def lock_vpc_addresses(self, vpc_id: str) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"havip-address:{vpc_id}")

    async def lock_tenant_havips(self, tenant_id: str) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"havip-count:{tenant_id}")

    async def limits(self, tenant_id: str, defaults: rules.Limits) -> rules.Limits:
        return await limits_for(self._conn, tenant_id, defaults)

    async def havip_taken(self, havip_id: str) -> bool:
        return bool(await self._conn.fetchval("SELECT 1 FROM quota_havips WHERE havip_id = $1", havip_id))

    async def havips_held(self, tenant_id: str) -> int:
        held: int = await self._conn.fetchval("SELECT count(*) FROM quota_havips WHERE tenant_id = $1", tenant_id)
        return held

    async def lock_havip(self, havip_id: str) -> rules.ReservedHaVip | None:
        row = await self._conn.fetchrow(
            "SELECT havip_id, tenant_id, vswitch_id, deleting_command_id FROM quota_havips"
            " WHERE havip_id = $1 FOR UPDATE",
            havip_id,
        )
        if row is None:
            return None
        return rules.ReservedHaVip(
            row["havip_id"], row["tenant_id"], row["vswitch_id"], deleting=row["deleting_command_id"] is not None
        )

    async def attachment_counts(self, havip_id: str, instance_id: str) -> AttachmentCounts:
        row = await self._conn.fetchrow(
            "SELECT"
            " (SELECT count(*) FROM quota_attachments WHERE havip_id = $1) AS havip_attachments,"
            " (SELECT count(DISTINCT havip_id) FROM quota_attachments WHERE instance_id = $2) AS instance_havips,"
            " EXISTS (SELECT 1 FROM quota_attachments WHERE havip_id = $1 AND instance_id = $2) AS attached",
            havip_id,
            instance_id,
        )
        return AttachmentCounts(*row.values())

    async def dependents(self, havip_id: str) -> Dependents:
        row = await self._conn.fetchrow(
            "SELECT (SELECT count(*) FROM quota_attachments WHERE havip_id = $1) AS attachments,"
            " (SELECT count(*) FROM quota_havip_eips WHERE havip_id = $1) AS eips",
            havip_id,
        )
        return Dependents(*row.values())

    async def eips_held(self, havip_id: str) -> int:
        held: int = await self._conn.fetchval("SELECT count(*) FROM quota_havip_eips WHERE havip_id = $1", havip_id)
        return held

    async def reserve_havip(self, accepted: HaVipCreationAccepted) -> None:
        await self._conn.execute(
            "INSERT INTO quota_havips (havip_id, tenant_id, vpc_id, vswitch_id, ip_address, command_id)"
            " VALUES ($1, $2, $3, $4, $5::inet, $6)",
            accepted.havip_id,
            accepted.tenant_id,
            accepted.vpc_id,
            accepted.vswitch_id,
            accepted.ip_address,
            accepted.command_id,
        )

    async def reserve_attachment(self, accepted: AttachmentAccepted) -> None:
        await self._conn.execute(
            "INSERT INTO quota_attachments (havip_id, target_id, instance_id, command_id) VALUES ($1, $2, $3, $4)",
            accepted.havip_id,
            accepted.target_id,
            accepted.instance_id,
            accepted.command_id,
        )

    async def reserve_eip(self, accepted: EipAssociationAccepted) -> None:
        await self._conn.execute(
            "INSERT INTO quota_havip_eips (eip_id, havip_id, command_id) VALUES ($1, $2, $3)",
            accepted.eip_id,
            accepted.havip_id,
            accepted.command_id,
        )

    async def mark_deleting(self, accepted: HaVipDeletionAccepted) -> None:
        await self._conn.execute(
            "UPDATE quota_havips SET deleting_command_id = $2 WHERE havip_id = $1",
            accepted.havip_id,
            accepted.command_id,
        )

    async def free_attachment(self, havip_id: str, target_id: str) -> bool:
        status = await self._conn.execute(
            "DELETE FROM quota_attachments WHERE havip_id = $1 AND target_id = $2", havip_id, target_id
        )
        return bool(status != "DELETE 0")

    async def free_eip(self, havip_id: str, eip_id: str) -> bool:
        status = await self._conn.execute(
            "DELETE FROM quota_havip_eips WHERE havip_id = $1 AND eip_id = $2", havip_id, eip_id
        )
        return bool(status != "DELETE 0")

    async def release(self, release: releases.Release) -> None:
        conn = self._conn
        match release:
            case releases.FreeDeletedHaVip():
                await conn.execute(
                    "DELETE FROM quota_havips WHERE havip_id = $1 AND deleting_command_id = $2",
                    release.havip_id,
                    release.command_id,
                )
            case releases.KeepHaVip():
                await conn.execute(
                    "UPDATE quota_havips SET deleting_command_id = NULL WHERE deleting_command_id = $1",
                    release.command_id,
                )
            case releases.FreeCreatedHaVip():
                owned = await conn.fetchval(
                    "SELECT 1 FROM quota_havips WHERE havip_id = $1 AND command_id = $2 FOR UPDATE",
                    release.havip_id,
                    release.command_id,
                )
                if owned:
                    await conn.execute("DELETE FROM quota_attachments WHERE havip_id = $1", release.havip_id)
                    await conn.execute("DELETE FROM quota_havip_eips WHERE havip_id = $1", release.havip_id)
                    await conn.execute("DELETE FROM quota_havips WHERE havip_id = $1", release.havip_id)
            case releases.FreeAttachment():
                await conn.execute("DELETE FROM quota_attachments WHERE command_id = $1", release.command_id)
            case releases.FreeEipAssociation():
                await conn.execute("DELETE FROM quota_havip_eips WHERE command_id = $1", release.command_id)
