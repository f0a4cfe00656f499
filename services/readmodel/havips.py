"""HAVIPs as a tenant sees them: the mapping service's tables and the gateway's pending operations (a read model).

The `havips` table is the mapping service's; until it has applied a create,
the HAVIP exists only as the tenant's Pending create operation, and is shown
as `Creating` from that request; while a delete is Pending it shows as
`Deleting`. Everything here is scoped to one tenant: another tenant's HAVIP
is indistinguishable from one that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from schemas.messages import HaVipMappingChanged, HaVipStatus
from services.gateway.operations import PENDING
from services.readmodel.mappings import load_mappings


@dataclass(frozen=True)
class HaVipRecord:
    havip_id: str
    vpc_id: str | None
    vswitch_id: str
    ip_address: str | None
    name: str
    description: str
    status: HaVipStatus
    version: int | None  # None until the mapping service has applied the create
    created_at: datetime
    mapping: HaVipMappingChanged | None
    reports: Mapping[str, asyncpg.Record] = field(default_factory=dict)  # last VRRP report per instance


# Two sources, one shape: HAVIPs the mapping service wrote, and creates it has
# not applied yet. {where} filters both; the NOT EXISTS hides a create whose
# row already exists while its operation is still Pending.
# A HAVIP whose delete is still Pending shows as Deleting until the mapping service marks it Deleted.
_VISIBLE = f"""
SELECT * FROM (
  SELECT h.havip_id, h.vpc_id, h.vswitch_id, host(h.ip_address) AS ip_address, h.name, h.description,
         CASE WHEN h.status <> '{HaVipStatus.DELETED}' AND EXISTS (
                SELECT 1 FROM operations d WHERE d.havip_id = h.havip_id AND d.tenant_id = $1
                   AND d.kind = 'DeleteHaVip' AND d.status = '{PENDING}')
              THEN '{HaVipStatus.DELETING}' ELSE h.status END AS status,
         h.version, h.created_at
    FROM havips h
   WHERE h.tenant_id = $1
  UNION ALL
  SELECT o.havip_id, NULL, o.request->>'vswitch_id', o.request->>'ip_address',
         coalesce(o.request->>'name', ''), coalesce(o.request->>'description', ''),
         '{HaVipStatus.CREATING}', NULL, o.created_at
    FROM operations o
   WHERE o.tenant_id = $1 AND o.kind = 'CreateHaVip' AND o.status = '{PENDING}'
     AND NOT EXISTS (SELECT 1 FROM havips h WHERE h.havip_id = o.havip_id)
) AS visible
{{where}}
ORDER BY havip_id
LIMIT {{limit}}
"""

_VRRP_REPORTS = """
SELECT havip_id, instance_id, state, priority, seq, reported_at, source
  FROM vrrp_reports WHERE havip_id = ANY($1::text[])
"""


@dataclass(frozen=True)
class HaVipFilters:
    vswitch_id: str | None = None
    status: str | None = None
    ip_address: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"vswitch_id": self.vswitch_id, "status": self.status, "ip_address": self.ip_address}


async def find_havip(pool: asyncpg.Pool, tenant_id: str, havip_id: str) -> HaVipRecord | None:
    found = await _load(pool, tenant_id, ["havip_id = $2"], [havip_id], limit=1)
    return found[0] if found else None


async def list_havips(
    pool: asyncpg.Pool, tenant_id: str, filters: HaVipFilters, *, after: str | None, limit: int
) -> list[HaVipRecord]:
    conditions: list[str] = []
    params: list[object] = []
    for column, value in (
        ("vswitch_id", filters.vswitch_id),
        ("status", filters.status),
        ("ip_address", filters.ip_address),
    ):
        if value is not None:
            params.append(value)
            conditions.append(f"{column} = ${len(params) + 1}")
    if filters.status is None:
        # Deleted HAVIPs are listed only when asked for by status, as ENS's DescribeHaVips does.
        conditions.append(f"status <> '{HaVipStatus.DELETED}'")
    if after is not None:
        params.append(after)
        conditions.append(f"havip_id > ${len(params) + 1}")
    return await _load(pool, tenant_id, conditions, params, limit=limit)


async def havip_visible(db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, havip_id: str) -> bool:
    """Whether the tenant may act on this HAVIP: it exists and is not deleted, or its create is Pending."""
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM havips WHERE havip_id = $1 AND tenant_id = $2"
            f" AND status <> '{HaVipStatus.DELETED}')"
            " OR EXISTS (SELECT 1 FROM operations WHERE havip_id = $1 AND tenant_id = $2"
            f" AND kind = 'CreateHaVip' AND status = '{PENDING}')",
            havip_id,
            tenant_id,
        )
    )


async def _load(
    pool: asyncpg.Pool, tenant_id: str, conditions: Sequence[str], params: Sequence[object], *, limit: int
) -> list[HaVipRecord]:
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = _VISIBLE.format(where=where, limit=int(limit))
    # One snapshot, so a HAVIP's owner, attachments and reports agree with each other.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(sql, tenant_id, *params)
        mapped_ids = [row["havip_id"] for row in rows if row["version"] is not None]
        mappings = {m.havip_id: m for m in await load_mappings(conn, mapped_ids)} if mapped_ids else {}
        reports: dict[str, dict[str, asyncpg.Record]] = {}
        for report in await conn.fetch(_VRRP_REPORTS, mapped_ids) if mapped_ids else []:
            reports.setdefault(report["havip_id"], {})[report["instance_id"]] = report
    return [
        HaVipRecord(
            havip_id=row["havip_id"],
            vpc_id=row["vpc_id"],
            vswitch_id=row["vswitch_id"],
            ip_address=row["ip_address"],
            name=row["name"],
            description=row["description"],
            status=HaVipStatus(row["status"]),
            version=row["version"],
            created_at=row["created_at"],
            mapping=mappings.get(row["havip_id"]),
            reports=reports.get(row["havip_id"], {}),
        )
        for row in rows
    ]
