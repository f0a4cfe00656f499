"""Tenants: who may hold HAVIPs and tokens, and how fast each of their tokens may call.

The gateway owns the `tenants` table. A tenant's HAVIP limits are quota's
(`services.quota.tenant_limits`), set beside it by `havip admin tenant`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# The same shape as every other id (schemas.messages.Id).
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_NAME_LENGTH = 128


class TenantRefused(Exception):
    """A tenant cannot be created as asked (its name or id is taken, or malformed)."""


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    # None: the gateway's default rate for tenant tokens.
    requests_per_second: float | None
    created_at: datetime


def new_tenant_id() -> str:
    return f"tenant-{secrets.token_hex(8)}"


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(
        tenant_id=row["tenant_id"],
        name=row["name"],
        requests_per_second=row["requests_per_second"],
        created_at=row["created_at"],
    )


def _check_rate(requests_per_second: float | None) -> None:
    if requests_per_second is not None and not requests_per_second > 0:
        raise TenantRefused("requests per second must be above 0")


async def create_tenant(
    db: asyncpg.Connection | asyncpg.Pool,
    name: str,
    *,
    tenant_id: str | None = None,
    requests_per_second: float | None = None,
) -> Tenant:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise TenantRefused(f"a tenant name has 1 to {MAX_NAME_LENGTH} characters")
    tenant_id = tenant_id or new_tenant_id()
    if not _TENANT_ID.fullmatch(tenant_id):
        raise TenantRefused(f"{tenant_id!r} is not a valid tenant id (letters, digits, '.', '_', ':', '-')")
    _check_rate(requests_per_second)
    try:
        row = await db.fetchrow(
            "INSERT INTO tenants (tenant_id, name, requests_per_second) VALUES ($1, $2, $3)"
            " RETURNING tenant_id, name, requests_per_second, created_at",
            tenant_id,
            name,
            requests_per_second,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "tenants_name_key":
            raise TenantRefused(f"a tenant named {name!r} already exists") from exc
        raise TenantRefused(f"tenant {tenant_id} already exists") from exc
    assert row is not None
    return _tenant(row)


async def list_tenants(db: asyncpg.Connection | asyncpg.Pool) -> list[Tenant]:
    rows = await db.fetch("SELECT tenant_id, name, requests_per_second, created_at FROM tenants ORDER BY name")
    return [_tenant(row) for row in rows]


async def get_tenant(db: asyncpg.Connection | asyncpg.Pool, tenant_id: str) -> Tenant | None:
    row = await db.fetchrow(
        "SELECT tenant_id, name, requests_per_second, created_at FROM tenants WHERE tenant_id = $1", tenant_id
    )
    return None if row is None else _tenant(row)


async def set_request_rate(
    db: asyncpg.Connection | asyncpg.Pool, tenant_id: str, requests_per_second: float | None
) -> Tenant | None:
    """The rate each of the tenant's tokens may make (None: the default); None when there is no such tenant.

    Tokens pick it up on their next request: the rate is read with the token.
    """
    _check_rate(requests_per_second)
    row = await db.fetchrow(
        "UPDATE tenants SET requests_per_second = $2 WHERE tenant_id = $1"
        " RETURNING tenant_id, name, requests_per_second, created_at",
        tenant_id,
        requests_per_second,
    )
    return None if row is None else _tenant(row)
