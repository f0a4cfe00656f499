"""The local copies of `ens.inventory`: quota and mapping each keep their own.

Each service consumes the compacted topic into its own tables; an upsert only
wins with a newer revision, so replays and re-ordering change nothing. Two
writers of one table would hide changes from each other: whoever came second
would see "not newer" and miss that the instance stopped or moved.
"""

from __future__ import annotations

from typing import Literal

import asyncpg

from schemas.messages import EipChanged, EniChanged, InstanceChanged, VSwitchChanged

InventoryChange = VSwitchChanged | InstanceChanged | EniChanged | EipChanged
InventoryCopy = Literal["mapping", "quota"]

_TABLE_PREFIX: dict[InventoryCopy, str] = {"mapping": "", "quota": "quota_"}


async def record_inventory(conn: asyncpg.Connection, change: InventoryChange, copy: InventoryCopy) -> bool:
    """Store a change in `copy`'s tables if it is newer than what they hold; True when it was."""
    status = await conn.execute(_upsert_sql(change, _TABLE_PREFIX[copy]), *_values(change))
    return status.endswith(" 1")


def _upsert_sql(change: InventoryChange, prefix: str) -> str:
    # `prefix` comes from _TABLE_PREFIX only, never from input.
    match change:
        case VSwitchChanged():
            return (
                f"INSERT INTO {prefix}vswitches AS t (vswitch_id, tenant_id, vpc_id, zone_id, cidr, revision)"
                " VALUES ($1, $2, $3, $4, $5::cidr, $6)"
                " ON CONFLICT (vswitch_id) DO UPDATE SET tenant_id = excluded.tenant_id,"
                " vpc_id = excluded.vpc_id, zone_id = excluded.zone_id, cidr = excluded.cidr,"
                " revision = excluded.revision WHERE t.revision < excluded.revision"
            )
        case InstanceChanged():
            return (
                f"INSERT INTO {prefix}instances AS t"
                " (instance_id, tenant_id, vpc_id, vswitch_id, private_ip, status, host_id, revision)"
                " VALUES ($1, $2, $3, $4, $5::inet, $6, $7, $8)"
                " ON CONFLICT (instance_id) DO UPDATE SET tenant_id = excluded.tenant_id,"
                " vpc_id = excluded.vpc_id, vswitch_id = excluded.vswitch_id, private_ip = excluded.private_ip,"
                " status = excluded.status, host_id = excluded.host_id, revision = excluded.revision"
                " WHERE t.revision < excluded.revision"
            )
        case EniChanged():
            return (
                f"INSERT INTO {prefix}enis AS t (eni_id, instance_id, tenant_id, vswitch_id, private_ip, revision)"
                " VALUES ($1, $2, $3, $4, $5::inet, $6)"
                " ON CONFLICT (eni_id) DO UPDATE SET instance_id = excluded.instance_id,"
                " tenant_id = excluded.tenant_id, vswitch_id = excluded.vswitch_id,"
                " private_ip = excluded.private_ip, revision = excluded.revision"
                " WHERE t.revision < excluded.revision"
            )
        case EipChanged():
            return (
                f"INSERT INTO {prefix}eips AS t (eip_id, tenant_id, ip_address, revision)"
                " VALUES ($1, $2, $3::inet, $4)"
                " ON CONFLICT (eip_id) DO UPDATE SET tenant_id = excluded.tenant_id,"
                " ip_address = excluded.ip_address, revision = excluded.revision"
                " WHERE t.revision < excluded.revision"
            )


def _values(change: InventoryChange) -> tuple[object, ...]:
    match change:
        case VSwitchChanged():
            return (change.vswitch_id, change.tenant_id, change.vpc_id, change.zone_id, change.cidr, change.revision)
        case InstanceChanged():
            return (
                change.instance_id,
                change.tenant_id,
                change.vpc_id,
                change.vswitch_id,
                change.private_ip,
                change.status.value,
                change.host_id,
                change.revision,
            )
        case EniChanged():
            return (
                change.eni_id,
                change.instance_id,
                change.tenant_id,
                change.vswitch_id,
                change.private_ip,
                change.revision,
            )
        case EipChanged():
            return (change.eip_id, change.tenant_id, change.ip_address, change.revision)
