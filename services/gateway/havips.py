"""The tenant's HAVIPs as the API shows them (views.py), read through the read model."""

from __future__ import annotations

import asyncpg

from schemas.errors import ErrorCode, HaVipError
from services.gateway.models import HaVipView
from services.gateway.views import view_of
from services.readmodel import havips as read
from services.readmodel.havips import HaVipFilters, havip_visible

__all__ = ["HaVipFilters", "find_havip", "havip_visible", "list_havips", "only_eip", "require_havip"]


async def find_havip(pool: asyncpg.Pool, tenant_id: str, havip_id: str) -> HaVipView | None:
    found = await read.find_havip(pool, tenant_id, havip_id)
    return view_of(found) if found is not None else None


async def list_havips(
    pool: asyncpg.Pool, tenant_id: str, filters: HaVipFilters, *, after: str | None, limit: int
) -> list[HaVipView]:
    return [view_of(found) for found in await read.list_havips(pool, tenant_id, filters, after=after, limit=limit)]


async def require_havip(pool: asyncpg.Pool, tenant_id: str, havip_id: str) -> None:
    """NotFound unless the tenant may act on the HAVIP (another tenant's answers the same)."""
    if not await havip_visible(pool, tenant_id, havip_id):
        raise HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"HAVIP {havip_id} does not exist")


async def only_eip(pool: asyncpg.Pool, tenant_id: str, havip_id: str) -> str:
    """The HAVIP's EIP, when a release does not name one: refused unless there is exactly one."""
    found = await find_havip(pool, tenant_id, havip_id)
    eips = found.eips if found is not None else []
    if not eips:
        raise HaVipError(ErrorCode.NOT_FOUND_EIP, f"{havip_id} has no EIP")
    if len(eips) > 1:
        raise HaVipError(ErrorCode.INVALID_PARAMETER, f"{havip_id} has {len(eips)} EIPs; name one with eip_id")
    return eips[0].eip_id
