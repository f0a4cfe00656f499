"""Per-tenant limits: quota's table of overrides, read under the ledger's locks.

A NULL column takes the cloud-wide default from the settings, so changing a
default changes every tenant that never had an override.
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from services.quota.rules import Limits

_COLUMNS = ("havips", "attachments_per_havip", "havips_per_instance", "eips_per_havip")


async def limits_for(db: asyncpg.Connection | asyncpg.Pool, tenant_id: str, defaults: Limits) -> Limits:
    row = await db.fetchrow(f"SELECT {', '.join(_COLUMNS)} FROM quota_tenant_limits WHERE tenant_id = $1", tenant_id)
    if row is None:
        return defaults
    return replace(defaults, **{column: row[column] for column in _COLUMNS if row[column] is not None})


async def set_limits(db: asyncpg.Connection | asyncpg.Pool, tenant_id: str, overrides: dict[str, int | None]) -> None:
    """Store overrides for the named limits (None: back to the default); others keep their value."""
    unknown = set(overrides) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown limits: {sorted(unknown)}")
    await db.execute("INSERT INTO quota_tenant_limits (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant_id)
    for column, value in overrides.items():
        await db.execute(f"UPDATE quota_tenant_limits SET {column} = $2 WHERE tenant_id = $1", tenant_id, value)
