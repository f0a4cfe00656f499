"""The REST API: tenants' HAVIPs and operations, and agents' VRRP reports.

Each mutation reads: check (auth, syntax, the HAVIP is the tenant's) →
record the operation → publish the command → 202. Whether the command is
allowed (limits, inventory, addresses) is decided downstream by quota, and
the tenant learns it from `GET /v1/operations/{id}`.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Header, Path, Query, Request

from schemas import topics
from schemas.errors import ErrorCode, HaVipError
from schemas.messages import (
    AttachHaVip,
    CreateHaVip,
    DetachHaVip,
    HaVipStatus,
    Id,
    VrrpReported,
    utcnow,
)
from services.gateway import havips, operations
from services.gateway.auth import Agent, Tenant
from services.gateway.commands import Idempotency, new_operation_id
from services.gateway.context import GatewayContext, gateway_context
from services.gateway.idempotency import check_idempotency_key, request_fingerprint
from services.gateway.models import (
    AssociationRequest,
    CreateHaVipRequest,
    ErrorBody,
    HaVipAccepted,
    HaVipPage,
    HaVipView,
    OperationAccepted,
    OperationError,
    OperationView,
    OwnerChangeView,
    OwnerHistoryPage,
    VrrpEventAccepted,
    VrrpEventBatch,
    VrrpEventOutcome,
    VrrpEventRequest,
    VrrpEventResults,
    check_havip_address,
)
from services.gateway.observability import VRRP_REPORTS_ACCEPTED
from services.gateway.operations import Operation
from services.gateway.paging import decode_page_token, encode_page_token
from services.readmodel.owner_history import owner_history
from services.readmodel.reporters import ReporterStanding, reporter_standing

log = logging.getLogger(__name__)

Context = Annotated[GatewayContext, Depends(gateway_context)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="Same key and request: the first answer again.")
]
HaVipId = Annotated[Id, Path()]
TargetId = Annotated[Id, Path()]

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 503)}

router = APIRouter(prefix="/v1", responses=_ERRORS)


def new_havip_id() -> str:
    return f"havip-{secrets.token_hex(8)}"


def operation_view(operation: Operation) -> OperationView:
    error = None
    if operation.error_code is not None:
        error = OperationError(code=operation.error_code, message=operation.error_message or "")
    return OperationView(
        operation_id=operation.operation_id,
        kind=operation.kind,
        havip_id=operation.havip_id,
        status=operation.status,  # type: ignore[arg-type]
        error=error,
        created_at=operation.created_at,
        updated_at=operation.updated_at,
    )


def _idempotency(key: str | None, request: Request, body: dict[str, Any]) -> Idempotency:
    return Idempotency(
        key=check_idempotency_key(key),
        request_hash=request_fingerprint(request.method, request.url.path, body),
    )


async def _require_havip(context: GatewayContext, tenant_id: str, havip_id: str) -> None:
    if not await havips.havip_visible(context.pool, tenant_id, havip_id):
        raise HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"HAVIP {havip_id} does not exist")


@router.post("/havips", status_code=202, response_model=HaVipAccepted, tags=["havips"])
async def create_havip(
    body: CreateHaVipRequest,
    request: Request,
    principal: Tenant,
    context: Context,
    idempotency_key: IdempotencyKey = None,
) -> HaVipAccepted:
    ip_address = check_havip_address(body.ip_address) if body.ip_address is not None else None
    wanted = {
        "vswitch_id": body.vswitch_id,
        "ip_address": ip_address,
        "name": body.name,
        "description": body.description,
    }
    command = CreateHaVip(
        command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=new_havip_id(), **wanted
    )
    submitted = await context.commands.submit(command, wanted, _idempotency(idempotency_key, request, wanted))
    return HaVipAccepted(havip=havips.creating_view(submitted.operation), operation=operation_view(submitted.operation))


@router.get("/havips", response_model=HaVipPage, tags=["havips"])
async def list_havips(
    principal: Tenant,
    context: Context,
    vswitch_id: str | None = None,
    status: HaVipStatus | None = None,
    ip_address: str | None = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    page_token: str | None = None,
) -> HaVipPage:
    filters = havips.HaVipFilters(
        vswitch_id=vswitch_id,
        status=status.value if status is not None else None,
        ip_address=check_havip_address(ip_address) if ip_address is not None else None,
    )
    after = decode_page_token(page_token, filters.as_dict())
    # One more than asked tells whether another page exists without a count(*).
    found = await havips.list_havips(context.pool, principal.tenant_id, filters, after=after, limit=page_size + 1)
    page = found[:page_size]
    next_token = encode_page_token(page[-1].havip_id, filters.as_dict()) if len(found) > page_size else None
    return HaVipPage(havips=page, next_page_token=next_token)


@router.get("/havips/{havip_id}", response_model=HaVipView, tags=["havips"])
async def get_havip(havip_id: HaVipId, principal: Tenant, context: Context) -> HaVipView:
    found = await havips.find_havip(context.pool, principal.tenant_id, havip_id)
    if found is None:
        raise HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"HAVIP {havip_id} does not exist")
    return found


@router.post("/havips/{havip_id}/associations", status_code=202, response_model=OperationAccepted, tags=["havips"])
async def attach(
    havip_id: HaVipId,
    body: AssociationRequest,
    request: Request,
    principal: Tenant,
    context: Context,
    idempotency_key: IdempotencyKey = None,
) -> OperationAccepted:
    await _require_havip(context, principal.tenant_id, havip_id)
    wanted = body.model_dump(exclude_none=True)
    command = AttachHaVip(
        command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=havip_id, target_id=body.target_id
    )
    submitted = await context.commands.submit(command, wanted, _idempotency(idempotency_key, request, wanted))
    return OperationAccepted(operation=operation_view(submitted.operation))


@router.delete(
    "/havips/{havip_id}/associations/{target_id}", status_code=202, response_model=OperationAccepted, tags=["havips"]
)
async def detach(
    havip_id: HaVipId,
    target_id: TargetId,
    request: Request,
    principal: Tenant,
    context: Context,
    idempotency_key: IdempotencyKey = None,
) -> OperationAccepted:
    await _require_havip(context, principal.tenant_id, havip_id)
    wanted = {"target_id": target_id}
    command = DetachHaVip(
        command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=havip_id, target_id=target_id
    )
    submitted = await context.commands.submit(command, wanted, _idempotency(idempotency_key, request, wanted))
    return OperationAccepted(operation=operation_view(submitted.operation))


@router.get("/operations/{operation_id}", response_model=OperationView, tags=["operations"])
async def get_operation(operation_id: str, principal: Tenant, context: Context) -> OperationView:
    found = await operations.find_operation(context.pool, principal.tenant_id, operation_id)
    if found is None:
        raise HaVipError(ErrorCode.NOT_FOUND_OPERATION, f"operation {operation_id} does not exist")
    return operation_view(found)


@router.post(
    "/vrrp-events",
    status_code=202,
    response_model=VrrpEventResults | VrrpEventAccepted,
    tags=["agents"],
    responses={409: {"model": ErrorBody, "description": "The instance is not attached to the HAVIP."}},
)
async def report_vrrp(
    body: VrrpEventBatch | VrrpEventRequest, principal: Agent, context: Context
) -> VrrpEventResults | VrrpEventAccepted:
    """One report, or up to 16 in order (`{"reports": [...]}`), from the instance the agent token speaks for.

    The batch form answers one outcome per report: a report that can never
    count (the instance is not attached, or the HAVIP is unknown) is Refused
    with its code, and the agent drops it; the others are published in order.
    The single form answers 202, or 409 `VrrpReport.NotAttached` / 404.
    """
    assert principal.instance_id is not None
    reports = body.reports if isinstance(body, VrrpEventBatch) else [body]
    # The failover path: one query for the whole batch, then the produces.
    standing = await reporter_standing(
        context.pool, principal.tenant_id, principal.instance_id, [r.havip_id for r in reports]
    )
    outcomes: list[VrrpEventOutcome] = []
    for request in reports:
        refusal = _refusal(standing[request.havip_id], request.havip_id, principal.instance_id)
        if refusal is not None:
            if not isinstance(body, VrrpEventBatch):
                raise refusal
            log.warning(
                "VRRP report refused havip=%s instance=%s code=%s",
                request.havip_id,
                principal.instance_id,
                refusal.code,
            )
            outcomes.append(
                VrrpEventOutcome(
                    havip_id=request.havip_id,
                    seq=request.seq,
                    status="Refused",
                    code=refusal.code,
                    message=refusal.message,
                )
            )
            continue
        message_id = await _publish_report(context, principal.tenant_id, principal.instance_id, request)
        outcomes.append(
            VrrpEventOutcome(havip_id=request.havip_id, seq=request.seq, status="Accepted", message_id=message_id)
        )
    if not isinstance(body, VrrpEventBatch):
        return VrrpEventAccepted(message_id=outcomes[0].message_id or "")
    return VrrpEventResults(results=outcomes)


def _refusal(standing: ReporterStanding, havip_id: str, instance_id: str) -> HaVipError | None:
    if standing is ReporterStanding.UNKNOWN_HAVIP:
        return HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"HAVIP {havip_id} does not exist")
    if standing is ReporterStanding.NOT_ATTACHED:
        return HaVipError(
            ErrorCode.REPORTER_NOT_ATTACHED,
            f"{instance_id} is not attached to {havip_id}; only attached instances may own it",
        )
    return None


async def _publish_report(context: GatewayContext, tenant_id: str, instance_id: str, body: VrrpEventRequest) -> str:
    now = utcnow()
    report = VrrpReported(
        havip_id=body.havip_id,
        tenant_id=tenant_id,
        instance_id=instance_id,
        state=body.state,
        priority=body.priority,
        seq=body.seq,
        reported_at=body.reported_at or now,
        received_at=now,
        lease_seconds=body.lease_seconds,
    )
    try:
        await context.producer.send_and_wait(
            context.vrrp_topic, key=body.havip_id.encode(), value=topics.encode(report)
        )
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("VRRP report not published havip=%s instance=%s error=%r", body.havip_id, instance_id, exc)
        raise HaVipError(ErrorCode.SERVICE_UNAVAILABLE, "the report could not be queued; retry") from exc
    VRRP_REPORTS_ACCEPTED.labels(body.state.value).inc()
    return report.message_id


@router.get("/havips/{havip_id}/owner-history", response_model=OwnerHistoryPage, tags=["havips"])
async def get_owner_history(
    havip_id: HaVipId,
    principal: Tenant,
    context: Context,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    page_token: str | None = None,
) -> OwnerHistoryPage:
    """Every change of the HAVIP's owner with its cause and what caused it, newest first."""
    await _require_havip(context, principal.tenant_id, havip_id)
    scope = {"havip_id": havip_id}
    after = decode_page_token(page_token, scope)
    before_id = _history_cursor(after)
    found = await owner_history(context.pool, havip_id, before_id=before_id, limit=page_size + 1)
    page = found[:page_size]
    next_token = encode_page_token(str(page[-1].id), scope) if len(found) > page_size else None
    return OwnerHistoryPage(
        changes=[OwnerChangeView.model_validate(change, from_attributes=True) for change in page],
        next_page_token=next_token,
    )


def _history_cursor(after: str | None) -> int | None:
    if after is None:
        return None
    if not after.isdigit():
        raise HaVipError(ErrorCode.INVALID_PARAMETER, "page_token is not a token this API issued")
    return int(after)
