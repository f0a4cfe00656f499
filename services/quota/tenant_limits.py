"""Per-tenant limits: quota's table of overrides, read under the ledger's locks.

A NULL column is no override (rules.limits_with says what that means).
"""

from __future__ import annotations

import asyncpg

from services.quota.rules import LIMIT_NAMES, Limits, limits_with
from services.runtime.settings import Settings

# One column per limit, named as the limit.
_COLUMNS = LIMIT_NAMES


def default_limits(settings: Settings) -> Limits:
    """The cloud-wide limits, as configured."""
    return Limits(
        attachments_per_havip=settings.max_attachments_per_havip,
        havips_per_instance=settings.max_havips_per_instance,
        eips_per_havip=settings.max_eips_per_havip,
        havips=settings.max_havips_per_tenant,
    )


async def limits_for(db: asyncpg.Connection | asyncpg.Pool, tenant_id: str, defaults: Limits) -> Limits:
    row = await db.fetchrow(f"SELECT {', '.join(_COLUMNS)} FROM quota_tenant_limits WHERE tenant_id = $1", tenant_id)
    return defaults if row is None else limits_with(defaults, dict(row))


async def set_limits(db: asyncpg.Connection | asyncpg.Pool, tenant_id: str, overrides: dict[str, int | None]) -> None:
    """Store overrides for the named limits (None: back to the default); others keep their value."""
    unknown = set(overrides) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown limits: {sorted(unknown)}")
    await db.execute("INSERT INTO quota_tenant_limits (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant_id)
    for column, value in overrides.items():
        await db.execute(f"UPDATE quota_tenant_limits SET {column} = $2 WHERE tenant_id = $1", tenant_id, value)
