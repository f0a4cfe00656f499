"""The mapping tables: one HAVIP's view for the election, and writing its outcome.

Every change to a HAVIP happens under `FOR UPDATE` on its `havips` row, so
commands, VRRP reports and inventory changes for one HAVIP apply one at a
time, whichever worker or agent handles them.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import asyncpg

from schemas.messages import HaVipStatus, VrrpState
from services.mapping.election import Candidate, HaVipView, OwnerChange, Report


async def lock_havip(conn: asyncpg.Connection, havip_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT havip_id, tenant_id, owner_target_id, status, version FROM havips WHERE havip_id = $1 FOR UPDATE",
        havip_id,
    )


async def lock_havips_of_instance(conn: asyncpg.Connection, instance_id: str) -> list[asyncpg.Record]:
    # Sorted, so two transactions locking several HAVIPs take them in the same order.
    return await conn.fetch(
        "SELECT havip_id, tenant_id, owner_target_id, status, version FROM havips"
        " WHERE havip_id IN (SELECT havip_id FROM attachments WHERE instance_id = $1)"
        " ORDER BY havip_id FOR UPDATE",
        instance_id,
    )


async def load_view(conn: asyncpg.Connection, havip_id: str, owner_target_id: str | None) -> HaVipView:
    candidates = tuple(
        Candidate(
            target_id=row["target_id"],
            instance_id=row["instance_id"],
            primary_ip=_ipv4(row["ip"]),
            instance_status=row["status"],
        )
        for row in await conn.fetch(
            "SELECT a.target_id, a.instance_id, host(coalesce(e.private_ip, i.private_ip)) AS ip,"
            " coalesce(i.status, 'Deleted') AS status"
            " FROM attachments a LEFT JOIN instances i ON i.instance_id = a.instance_id"
            " LEFT JOIN enis e ON e.eni_id = a.eni_id WHERE a.havip_id = $1 ORDER BY a.target_id",
            havip_id,
        )
    )
    reports = {
        row["instance_id"]: Report(
            instance_id=row["instance_id"],
            state=VrrpState(row["state"]),
            priority=row["priority"],
            seq=row["seq"],
            reported_at=row["reported_at"],
            received_at=row["received_at"],
        )
        for row in await conn.fetch("SELECT * FROM vrrp_reports WHERE havip_id = $1", havip_id)
    }
    return HaVipView(owner_target_id=owner_target_id, candidates=candidates, reports=reports)


async def save_report(conn: asyncpg.Connection, havip_id: str, report: Report) -> None:
    await conn.execute(
        "INSERT INTO vrrp_reports (havip_id, instance_id, state, priority, seq, reported_at, received_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (havip_id, instance_id) DO UPDATE SET state = excluded.state, priority = excluded.priority,"
        " seq = excluded.seq, reported_at = excluded.reported_at, received_at = excluded.received_at",
        havip_id,
        report.instance_id,
        report.state.value,
        report.priority,
        report.seq,
        report.reported_at,
        report.received_at,
    )


async def save_outcome(
    conn: asyncpg.Connection, havip_id: str, view: HaVipView, owner: Candidate | None, change: OwnerChange | None
) -> int:
    """Store the owner and status, bump the version, record why the owner changed."""
    status = HaVipStatus.IN_USE if view.candidates else HaVipStatus.AVAILABLE
    version: int = await conn.fetchval(
        "UPDATE havips SET owner_target_id = $2, status = $3, version = version + 1, updated_at = now()"
        " WHERE havip_id = $1 RETURNING version",
        havip_id,
        owner.target_id if owner else None,
        status.value,
    )
    if change is not None:
        await conn.execute(
            "INSERT INTO owner_changes (havip_id, version, previous_instance_id, instance_id, cause, detail)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            havip_id,
            version,
            change.previous.instance_id if change.previous else None,
            change.owner.instance_id if change.owner else None,
            change.cause.value,
            change.detail,
        )
    return version


def _ipv4(text: str | None) -> IPv4Address:
    address = ip_address(text or "0.0.0.0")
    return address if isinstance(address, IPv4Address) else IPv4Address(0)
