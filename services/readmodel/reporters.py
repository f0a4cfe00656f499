"""May this instance report VRRP states for these HAVIPs? The gateway asks before publishing.

A report from an instance that is not attached can never count (only attached
instances may own a HAVIP), so the agent is told at once with a 409 instead of
a silent dead letter. Attachments change only through commands that the
mapping service applies before their operation succeeds, so an instance the
tenant has just attached is already here.
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
