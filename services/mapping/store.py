"""The mapping tables: one HAVIP's contest for the election, and writing its outcome.

Every change to a HAVIP happens under `FOR UPDATE` on its `havips` row, so
commands, VRRP reports, lease expiries and inventory changes for one HAVIP
apply one at a time, whichever worker or agent handles them. A lease renewal
takes the same row `FOR SHARE`: it waits for a change in flight, never for
another renewal.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from schemas.ipv4 import parse_ipv4
from schemas.messages import HaVipStatus, InstanceStatus, VrrpState
from services.mapping.election import Candidate, Contest, OwnerChange, Report, Trigger


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


async def load_contest(conn: asyncpg.Connection, havip_id: str, owner_target_id: str | None) -> Contest:
    candidates = tuple(
        Candidate(
            target_id=row["target_id"],
            instance_id=row["instance_id"],
            primary_ip=parse_ipv4(row["ip"] or "0.0.0.0"),
            instance_status=InstanceStatus(row["status"]),
        )
        for row in await conn.fetch(
            "SELECT a.target_id, a.instance_id, host(coalesce(e.private_ip, i.private_ip)) AS ip,"
            " coalesce(i.status, $2) AS status"
            " FROM attachments a LEFT JOIN instances i ON i.instance_id = a.instance_id"
            " LEFT JOIN enis e ON e.eni_id = a.eni_id WHERE a.havip_id = $1 ORDER BY a.target_id",
            havip_id,
            InstanceStatus.DELETED.value,
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
            expires_at=row["expires_at"],
        )
        for row in await conn.fetch("SELECT * FROM vrrp_reports WHERE havip_id = $1", havip_id)
    }
    return Contest(owner_target_id=owner_target_id, candidates=candidates, reports=reports)


async def save_report(conn: asyncpg.Connection, havip_id: str, report: Report) -> None:
    await conn.execute(
        "INSERT INTO vrrp_reports (havip_id, instance_id, state, priority, seq, reported_at, received_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (havip_id, instance_id) DO UPDATE SET state = excluded.state, priority = excluded.priority,"
        " seq = excluded.seq, reported_at = excluded.reported_at, received_at = excluded.received_at,"
        " expires_at = excluded.expires_at",
        havip_id,
        report.instance_id,
        report.state.value,
        report.priority,
        report.seq,
        report.reported_at,
        report.received_at,
        report.expires_at,
    )


# `election.renewal_changes_nothing` in one statement: extend a claim only if it
# is the same live MASTER claim at the same priority, the report is newer, and
# the owner is this instance or itself still live. Anything else (a priority
# change, a revived claim, an owner whose lease ran out) takes the full path.
_RENEW = """
WITH h AS (
    SELECT havip_id, owner_target_id FROM havips WHERE havip_id = $1 AND tenant_id = $2 FOR SHARE
), owner AS (
    SELECT r.instance_id, r.state, r.expires_at
      FROM h JOIN attachments a ON a.havip_id = h.havip_id AND a.target_id = h.owner_target_id
      JOIN vrrp_reports r ON r.havip_id = h.havip_id AND r.instance_id = a.instance_id
)
UPDATE vrrp_reports r
   SET seq = $4, reported_at = $5, received_at = $6, expires_at = $7
  FROM h
 WHERE r.havip_id = h.havip_id AND r.instance_id = $3
   AND r.state = 'MASTER' AND r.priority = $8
   AND r.expires_at IS NOT NULL AND r.expires_at > $6
   AND (r.seq, r.reported_at) < ($4, $5)
   AND EXISTS (SELECT 1 FROM owner o
                WHERE o.instance_id = $3
                   OR (o.state = 'MASTER' AND (o.expires_at IS NULL OR o.expires_at > $6)))
RETURNING true
"""


async def renew_claim(pool: asyncpg.Pool, havip_id: str, tenant_id: str, report: Report) -> bool:
    """One round trip: True when the report only renewed a live claim (nothing else to do)."""
    if report.state is not VrrpState.MASTER or report.expires_at is None or report.expires_at <= report.received_at:
        return False
    return bool(
        await pool.fetchval(
            _RENEW,
            havip_id,
            tenant_id,
            report.instance_id,
            report.seq,
            report.reported_at,
            report.received_at,
            report.expires_at,
            report.priority,
        )
    )


# Owners whose claim ran out while another attached, running instance holds a live one.
_LAPSED = """
SELECT h.havip_id
  FROM havips h
  JOIN attachments a ON a.havip_id = h.havip_id AND a.target_id = h.owner_target_id
  JOIN vrrp_reports o ON o.havip_id = h.havip_id AND o.instance_id = a.instance_id
 WHERE o.state = 'MASTER' AND o.expires_at IS NOT NULL AND o.expires_at <= $1
   AND EXISTS (
        SELECT 1 FROM vrrp_reports c
          JOIN attachments ca ON ca.havip_id = c.havip_id AND ca.instance_id = c.instance_id
          JOIN instances ci ON ci.instance_id = c.instance_id
         WHERE c.havip_id = h.havip_id AND c.instance_id <> o.instance_id AND c.state = 'MASTER'
           AND (c.expires_at IS NULL OR c.expires_at > $1) AND ci.status = $2)
 ORDER BY h.havip_id
 LIMIT $3
"""


async def havips_with_lapsed_owner(pool: asyncpg.Pool, at: datetime, limit: int = 1000) -> list[str]:
    rows = await pool.fetch(_LAPSED, at, InstanceStatus.RUNNING.value, limit)
    return [row["havip_id"] for row in rows]


async def mark_published(pool: asyncpg.Pool, havip_id: str, version: int) -> None:
    await pool.execute(
        "UPDATE havips SET published_version = $2 WHERE havip_id = $1 AND published_version < $2", havip_id, version
    )


async def forget_published(pool: asyncpg.Pool) -> int:
    """The mappings topic was lost: every HAVIP's state must be published again (the sweep does it)."""
    status = await pool.execute("UPDATE havips SET published_version = 0 WHERE published_version > 0")
    return int(status.split()[-1])


async def unpublished_havips(pool: asyncpg.Pool, older_than: timedelta, limit: int = 1000) -> list[str]:
    # Only changes older than a publish normally takes, so the sweep does not race the handler.
    rows = await pool.fetch(
        "SELECT havip_id FROM havips WHERE published_version < version AND updated_at < now() - $1::interval"
        " ORDER BY havip_id LIMIT $2",
        older_than,
        limit,
    )
    return [row["havip_id"] for row in rows]


async def save_outcome(
    conn: asyncpg.Connection,
    havip_id: str,
    contest: Contest,
    owner: Candidate | None,
    change: OwnerChange | None,
    trigger: Trigger,
) -> int:
    """Store the owner and status, bump the version, record why the owner changed and what caused it."""
    status = HaVipStatus.IN_USE if contest.candidates else HaVipStatus.AVAILABLE
    version: int = await conn.fetchval(
        "UPDATE havips SET owner_target_id = $2, status = $3, version = version + 1, updated_at = now()"
        " WHERE havip_id = $1 RETURNING version",
        havip_id,
        owner.target_id if owner else None,
        status.value,
    )
    if change is not None:
        await conn.execute(
            "INSERT INTO owner_changes (havip_id, version, previous_instance_id, instance_id, cause, detail,"
            " trigger_kind, trigger_message_id, trigger_instance_id, trigger_seq, lease_expired_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            havip_id,
            version,
            change.previous.instance_id if change.previous else None,
            change.owner.instance_id if change.owner else None,
            change.cause.value,
            change.detail,
            trigger.kind.value,
            trigger.message_id,
            trigger.instance_id,
            trigger.seq,
            trigger.lease_expired_at,
        )
    return version
