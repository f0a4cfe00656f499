"""HAVIPs as a tenant sees them: the mapping service's tables and the gateway's pending operations (a read model).

The `havips` table is the mapping service's; until it has applied a create,
the HAVIP exists only as the tenant's Pending create operation. What status
each is shown (`Creating`, `Deleting`, or the stored one) is decided in
`status.py`; the SQL here only loads the facts it needs. Everything here is
scoped to one tenant: another tenant's HAVIP is indistinguishable from one
that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from schemas.messages import HaVipMappingChanged, HaVipStatus, OperationStatus
from services.readmodel.mappings import load_mappings
from services.readmodel.status import CREATE, listed_statuses, may_act_on, shown_status


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


# Every HAVIP the tenant has, in one shape: the rows the mapping service wrote, and the creates it
# has not applied yet (known only from their request, so read from a create; the NOT EXISTS hides
# a create whose row already exists while its operation is still Pending). With each, the kinds
# of its Pending operations: with the stored status, what `shown_status` decides from.
_KNOWN = f"""
SELECT * FROM (
  SELECT known.*,
         ARRAY(SELECT p.kind FROM operations p
                WHERE p.havip_id = known.havip_id AND p.tenant_id = $1 AND p.status = '{OperationStatus.PENDING}'
         ) AS pending
    FROM (
      SELECT h.havip_id, h.vpc_id, h.vswitch_id, host(h.ip_address) AS ip_address, h.name, h.description,
             h.status AS stored_status, h.version, h.created_at
        FROM havips h
       WHERE h.tenant_id = $1
      UNION ALL
      SELECT o.havip_id, NULL, o.request->>'vswitch_id', o.request->>'ip_address',
             coalesce(o.request->>'name', ''), coalesce(o.request->>'description', ''), NULL, NULL, o.created_at
        FROM operations o
       WHERE o.tenant_id = $1 AND o.kind = '{CREATE}' AND o.status = '{OperationStatus.PENDING}'
         AND NOT EXISTS (SELECT 1 FROM havips h WHERE h.havip_id = o.havip_id)
    ) AS known
) AS facts
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
    found = await _load(pool, tenant_id, ["havip_id = $2"], [havip_id], shown=None, after=None, limit=1)
    return found[0] if found else None


async def list_havips(
    pool: asyncpg.Pool, tenant_id: str, filters: HaVipFilters, *, after: str | None, limit: int
) -> list[HaVipRecord]:
    conditions: list[str] = []
    params: list[object] = []
    for column, value in (("vswitch_id", filters.vswitch_id), ("ip_address", filters.ip_address)):
        if value is not None:
            params.append(value)
            conditions.append(f"{column} = ${len(params) + 1}")
    shown = listed_statuses(HaVipStatus(filters.status) if filters.status is not None else None)
    return await _load(pool, tenant_id, conditions, params, shown=shown, after=after, limit=limit)


async def havip_visible(db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, havip_id: str) -> bool:
    """Whether the tenant may act on this HAVIP (`status.may_act_on`): one round trip for its facts."""
    row = await db.fetchrow(
        "SELECT (SELECT status FROM havips WHERE havip_id = $1 AND tenant_id = $2) AS stored_status,"
        " ARRAY(SELECT kind FROM operations WHERE havip_id = $1 AND tenant_id = $2 AND status = $3) AS pending",
        havip_id,
        tenant_id,
        OperationStatus.PENDING.value,
    )
    return may_act_on(_shown(row))


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _shown(row: asyncpg.Record) -> HaVipStatus | None:
    stored = row["stored_status"]
    return shown_status(HaVipStatus(stored) if stored is not None else None, row["pending"])


async def _load(
    pool: asyncpg.Pool,
    tenant_id: str,
    conditions: Sequence[str],
    params: Sequence[object],
    *,
    shown: frozenset[HaVipStatus] | None,
    after: str | None,
    limit: int,
) -> list[HaVipRecord]:
    """Up to `limit` HAVIPs after `after` (by id) whose shown status is in `shown` (None: any).

    Only a Pending operation makes the shown status differ from the stored one, so SQL may
    narrow a status filter to "stored status wanted, or some operation Pending" and the rule
    decides the rest. A candidate it turns away leaves the page short: the next candidates are
    read from the same snapshot until the page is full or there are no more (rarely: only
    HAVIPs with a Pending operation are ever turned away).
    """
    conditions = list(conditions)
    params = list(params)
    if shown is not None:
        params.append(sorted(shown))
        conditions.append(f"(stored_status = ANY(${len(params) + 1}::text[]) OR pending <> '{{}}'::text[])")
    # Two statements rather than `$n IS NULL OR ...`: the first page's plan need not scan past a cursor.
    first = _KNOWN.format(where=_where(conditions), limit=int(limit))
    rest = _KNOWN.format(where=_where([*conditions, f"havip_id > ${len(params) + 2}"]), limit=int(limit))
    # One snapshot, so a HAVIP's owner, attachments and reports agree with each other.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows: list[tuple[asyncpg.Record, HaVipStatus]] = []
        while True:
            if after is None:
                candidates = await conn.fetch(first, tenant_id, *params)
            else:
                candidates = await conn.fetch(rest, tenant_id, *params, after)
            for row in candidates:
                status = _shown(row)
                if status is not None and (shown is None or status in shown):
                    rows.append((row, status))
            if len(rows) >= limit or len(candidates) < limit:
                break
            after = candidates[-1]["havip_id"]
        rows = rows[:limit]
        mapped_ids = [row["havip_id"] for row, _ in rows if row["version"] is not None]
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
            status=status,
            version=row["version"],
            created_at=row["created_at"],
            mapping=mappings.get(row["havip_id"]),
            reports=reports.get(row["havip_id"], {}),
        )
        for row, status in rows
    ]
