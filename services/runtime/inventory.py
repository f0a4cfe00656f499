"""The local copy of `ens.inventory` that quota and mapping both keep.

Both services consume the compacted topic and upsert the same rows; an upsert
only wins with a newer revision, so the two writers and any replay converge
on the same row.
"""

from __future__ import annotations

import asyncpg

from schemas.messages import EipChanged, EniChanged, InstanceChanged, VSwitchChanged

InventoryChange = VSwitchChanged | InstanceChanged | EniChanged | EipChanged


async def record_inventory(conn: asyncpg.Connection, change: InventoryChange) -> bool:
    """Store a change if it is newer than what we hold; True when it was."""
    match change:
        case VSwitchChanged():
            status = await conn.execute(
                "INSERT INTO vswitches (vswitch_id, tenant_id, vpc_id, zone_id, cidr, revision)"
                " VALUES ($1, $2, $3, $4, $5::cidr, $6)"
                " ON CONFLICT (vswitch_id) DO UPDATE SET tenant_id = excluded.tenant_id,"
                " vpc_id = excluded.vpc_id, zone_id = excluded.zone_id, cidr = excluded.cidr,"
                " revision = excluded.revision WHERE vswitches.revision < excluded.revision",
                change.vswitch_id, change.tenant_id, change.vpc_id, change.zone_id, change.cidr, change.revision,
            )
        case InstanceChanged():
            status = await conn.execute(
                "INSERT INTO instances (instance_id, tenant_id, vpc_id, vswitch_id, private_ip, status, host_id, revision)"
                " VALUES ($1, $2, $3, $4, $5::inet, $6, $7, $8)"
                " ON CONFLICT (instance_id) DO UPDATE SET tenant_id = excluded.tenant_id,"
                " vpc_id = excluded.vpc_id, vswitch_id = excluded.vswitch_id, private_ip = excluded.private_ip,"
                " status = excluded.status, host_id = excluded.host_id, revision = excluded.revision"
                " WHERE instances.revision < excluded.revision",
                change.instance_id, change.tenant_id, change.vpc_id, change.vswitch_id, change.private_ip,
                change.status.value, change.host_id, change.revision,
            )
        case EniChanged():
            status = await conn.execute(
                "INSERT INTO enis (eni_id, instance_id, tenant_id, vswitch_id, private_ip, revision)"
                " VALUES ($1, $2, $3, $4, $5::inet, $6)"
                " ON CONFLICT (eni_id) DO UPDATE SET instance_id = excluded.instance_id,"
                " tenant_id = excluded.tenant_id, vswitch_id = excluded.vswitch_id,"
                " private_ip = excluded.private_ip, revision = excluded.revision"
                " WHERE enis.revision < excluded.revision",
                change.eni_id, change.instance_id, change.tenant_id, change.vswitch_id, change.private_ip,
                change.revision,
            )
        case EipChanged():
            status = await conn.execute(
                "INSERT INTO eips (eip_id, tenant_id, ip_address, revision) VALUES ($1, $2, $3::inet, $4)"
                " ON CONFLICT (eip_id) DO UPDATE SET tenant_id = excluded.tenant_id,"
                " ip_address = excluded.ip_address, revision = excluded.revision"
                " WHERE eips.revision < excluded.revision",
                change.eip_id, change.tenant_id, change.ip_address, change.revision,
            )
    return status.endswith(" 1")
