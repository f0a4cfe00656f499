"""The tenant's view of its HAVIPs, built from the read model."""

from __future__ import annotations

import asyncpg

from schemas.messages import HaVipStatus
from services.gateway.models import AttachmentView, EipView, HaVipView, OwnerView, VrrpReportView
from services.gateway.operations import Operation
from services.readmodel import havips as read
from services.readmodel.havips import HaVipFilters, HaVipRecord, havip_visible

__all__ = ["HaVipFilters", "creating_view", "find_havip", "havip_visible", "list_havips"]


async def find_havip(pool: asyncpg.Pool, tenant_id: str, havip_id: str) -> HaVipView | None:
    found = await read.find_havip(pool, tenant_id, havip_id)
    return view_of(found) if found is not None else None


async def list_havips(
    pool: asyncpg.Pool, tenant_id: str, filters: HaVipFilters, *, after: str | None, limit: int
) -> list[HaVipView]:
    return [view_of(found) for found in await read.list_havips(pool, tenant_id, filters, after=after, limit=limit)]


def creating_view(operation: Operation) -> HaVipView:
    request = operation.request
    return HaVipView(
        havip_id=operation.havip_id,
        vswitch_id=request["vswitch_id"],
        ip_address=request.get("ip_address"),
        name=request.get("name", ""),
        description=request.get("description", ""),
        status=HaVipStatus.CREATING,
        created_at=operation.created_at,
    )


def view_of(record: HaVipRecord) -> HaVipView:
    mapping = record.mapping
    attachments = []
    if mapping is not None:
        for attachment in mapping.attachments:
            report = record.reports.get(attachment.instance_id)
            vrrp = (
                VrrpReportView(
                    state=report["state"],
                    priority=report["priority"],
                    seq=report["seq"],
                    reported_at=report["reported_at"],
                    source=report["source"],
                )
                if report
                else None
            )
            attachments.append(
                AttachmentView(
                    target_id=attachment.target_id,
                    instance_id=attachment.instance_id,
                    eni_id=attachment.eni_id,
                    vrrp=vrrp,
                )
            )
    return HaVipView(
        havip_id=record.havip_id,
        vpc_id=record.vpc_id,
        vswitch_id=record.vswitch_id,
        ip_address=record.ip_address,
        name=record.name,
        description=record.description,
        status=record.status,
        eips=[EipView(eip_id=e.eip_id, ip_address=e.ip_address) for e in mapping.eips] if mapping else [],
        owner=OwnerView(**mapping.owner.model_dump()) if mapping and mapping.owner else None,
        attachments=attachments,
        version=record.version,
        created_at=record.created_at,
    )
