"""May this instance report VRRP states for these HAVIPs? The gateway asks before publishing.

A report from an instance that is not attached can never count (only attached
instances may own a HAVIP), so the agent is told at once with a 409 instead of
a silent dead letter. Attachments change only through commands that the
mapping service applies before their operation succeeds, so an instance the
tenant has just attached is already here.

The gateway asks its in-memory directory first (`services.gateway.directory`):
the last two functions below fill it, and `reporter_standing` answers its misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import asyncpg


class ReporterStanding(StrEnum):
    ATTACHED = "attached"
    NOT_ATTACHED = "not-attached"
    UNKNOWN_HAVIP = "unknown-havip"  # or another tenant's: indistinguishable on purpose


async def reporter_standing(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, instance_id: str, havip_ids: Sequence[str]
) -> dict[str, ReporterStanding]:
    """One query for a whole batch of reports."""
    rows = await db.fetch(
        "SELECT h.havip_id, EXISTS (SELECT 1 FROM attachments a WHERE a.havip_id = h.havip_id"
        " AND a.instance_id = $3) AS attached FROM havips h WHERE h.havip_id = ANY($1::text[]) AND h.tenant_id = $2",
        list(set(havip_ids)),
        tenant_id,
        instance_id,
    )
    found = {
        row["havip_id"]: ReporterStanding.ATTACHED if row["attached"] else ReporterStanding.NOT_ATTACHED for row in rows
    }
    return {havip_id: found.get(havip_id, ReporterStanding.UNKNOWN_HAVIP) for havip_id in havip_ids}


# --- for the gateway's agent directory (services.gateway.directory) ----------------------------------
# Two statements each rather than `$1 IS NULL OR ...`: a prepared statement's generic plan
# would scan the whole table for the few keys a notification names.


async def havip_tenants(
    db: asyncpg.Pool | asyncpg.Connection, havip_ids: Sequence[str] | None = None
) -> dict[str, str]:
    """The tenant of each HAVIP (of these, or of all)."""
    if havip_ids is None:
        rows = await db.fetch("SELECT havip_id, tenant_id FROM havips")
    else:
        rows = await db.fetch(
            "SELECT havip_id, tenant_id FROM havips WHERE havip_id = ANY($1::text[])", list(havip_ids)
        )
    return {row["havip_id"]: row["tenant_id"] for row in rows}


async def attached_havips(
    db: asyncpg.Pool | asyncpg.Connection, instance_ids: Sequence[str] | None = None
) -> dict[str, set[str]]:
    """The HAVIPs each instance (of these, or every attached one) is attached to, through any target."""
    if instance_ids is None:
        rows = await db.fetch("SELECT instance_id, havip_id FROM attachments")
    else:
        rows = await db.fetch(
            "SELECT instance_id, havip_id FROM attachments WHERE instance_id = ANY($1::text[])", list(instance_ids)
        )
    attached: dict[str, set[str]] = {}
    for row in rows:
        attached.setdefault(row["instance_id"], set()).add(row["havip_id"])
    return attached
