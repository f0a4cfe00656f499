"""What the API answers, built from the gateway's records and the read model's."""

from __future__ import annotations

from schemas.messages import HaVipStatus
from services.gateway.models import (
    AttachmentView,
    EipView,
    HaVipView,
    OperationError,
    OperationView,
    OwnerView,
    VrrpReportView,
)
from services.gateway.operations import Operation
from services.readmodel.havips import HaVipRecord


def operation_view(operation: Operation) -> OperationView:
    error = None
    if operation.error_code is not None:
        error = OperationError(code=operation.error_code, message=operation.error_message or "")
    return OperationView(
        operation_id=operation.operation_id,
        kind=operation.kind,
        havip_id=operation.havip_id,
        status=operation.status,
        error=error,
        created_at=operation.created_at,
        updated_at=operation.updated_at,
    )


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
