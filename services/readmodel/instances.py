"""Instances as the gateway may see them: a read model over the mapping service's `instances` table.

That table is the mapping service's own copy of `ens.inventory` (it alone
writes it, guarded by revision); the gateway only reads it here, to tell
whether an instance is the tenant's before issuing an agent token for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from schemas.messages import InstanceStatus


@dataclass(frozen=True)
class TenantInstance:
    instance_id: str
    tenant_id: str
    status: InstanceStatus


async def find_instance(
    db: asyncpg.Connection | asyncpg.Pool, tenant_id: str, instance_id: str
) -> TenantInstance | None:
    """The tenant's instance, or None when unknown, another tenant's or deleted (indistinguishable on purpose)."""
    row = await db.fetchrow(
        "SELECT instance_id, tenant_id, status FROM instances WHERE instance_id = $1 AND tenant_id = $2"
        " AND status <> $3",
        instance_id,
        tenant_id,
        InstanceStatus.DELETED.value,
    )
    if row is None:
        return None
    return TenantInstance(
        instance_id=row["instance_id"], tenant_id=row["tenant_id"], status=InstanceStatus(row["status"])
    )
