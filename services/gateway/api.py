"""The tenant REST API's routes: HAVIPs, their operations and owner history.

Each route parses, calls and answers. What they call lives beside them: ids
(ids.py), submitting a command (commands.py), waiting for an operation
(waiting.py), pages (paging.py), the answers' views (views.py). Each mutation
reads: check (auth, syntax, the HAVIP is the tenant's) → record the operation
→ publish the command → 202. Whether the command is
allowed (limits, inventory, addresses) is decided downstream by quota, and
the tenant learns it from `GET /v1/operations/{id}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from schemas.errors import ErrorCode, HaVipError
from schemas.ipv4 import IPV4_PATTERN
from schemas.messages import (
    AssociateEip,
    AttachHaVip,
    CreateHaVip,
    DeleteHaVip,
    DetachHaVip,
    HaVipStatus,
    Id,
    TenantCommand,
    UnassociateEip,
)
from services.gateway import havips
from services.gateway.auth import Tenant
from services.gateway.context import GatewayContext, gateway_context
from services.gateway.idempotency import IdempotencyKey, idempotency_of
from services.gateway.ids import new_havip_id, new_operation_id
from services.gateway.models import (
    AssociationRequest,
    CreateHaVipRequest,
    EipRequest,
    HaVipAccepted,
    HaVipPage,
    HaVipView,
    OperationAccepted,
    OperationView,
    OwnerChangeView,
    OwnerHistoryPage,
    check_havip_address,
)
from services.gateway.paging import cut_page, decode_page_token, numeric_cursor
from services.gateway.views import creating_view, operation_view
from services.gateway.waiting import WAIT_PATTERN, parse_wait, wait_for_outcome
from services.readmodel.owner_history import owner_history
from services.runtime.openapi import ErrorBody

Context = Annotated[GatewayContext, Depends(gateway_context)]
HaVipId = Annotated[Id, Path()]
TargetId = Annotated[Id, Path()]

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 503)}

router = APIRouter(prefix="/v1", responses=_ERRORS)


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
    submitted = await context.commands.submit(command, wanted, idempotency_of(idempotency_key, request, wanted))
    return HaVipAccepted(havip=creating_view(submitted.operation), operation=operation_view(submitted.operation))


@router.get("/havips", response_model=HaVipPage, tags=["havips"])
async def list_havips(
    principal: Tenant,
    context: Context,
    vswitch_id: Annotated[Id | None, Query()] = None,
    status: HaVipStatus | None = None,
    ip_address: Annotated[str | None, Query(pattern=IPV4_PATTERN, description="IPv4, as listed")] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    page_token: str | None = None,
) -> HaVipPage:
    filters = havips.HaVipFilters(
        vswitch_id=vswitch_id,
        status=status.value if status is not None else None,
        ip_address=check_havip_address(ip_address) if ip_address is not None else None,
    )
    after = decode_page_token(page_token, filters.as_dict())
    found = await havips.list_havips(context.pool, principal.tenant_id, filters, after=after, limit=page_size + 1)
    page, next_token = cut_page(found, page_size, lambda havip: havip.havip_id, filters.as_dict())
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
    command = AttachHaVip(
        command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=havip_id, target_id=body.target_id
    )
    wanted = body.model_dump(exclude_none=True)
    return await _submit_for_havip(
        context, request, command, wanted, idempotency_key, tenant_id=principal.tenant_id, havip_id=havip_id
    )


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
    command = DetachHaVip(
        command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=havip_id, target_id=target_id
    )
    return await _submit_for_havip(
        context,
        request,
        command,
        {"target_id": target_id},
        idempotency_key,
        tenant_id=principal.tenant_id,
        havip_id=havip_id,
    )


@router.delete("/havips/{havip_id}", status_code=202, response_model=OperationAccepted, tags=["havips"])
async def delete_havip(
    havip_id: HaVipId,
    request: Request,
    principal: Tenant,
    context: Context,
    idempotency_key: IdempotencyKey = None,
) -> OperationAccepted:
    """Release the HAVIP (ENS DeleteHaVip): `Deleting`, then `Deleted` once applied.

    Refused with `DependencyViolation.HaVip` while instances, ENIs or an EIP are still associated.
    """
    command = DeleteHaVip(command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=havip_id)
    return await _submit_for_havip(
        context, request, command, {}, idempotency_key, tenant_id=principal.tenant_id, havip_id=havip_id
    )


@router.put("/havips/{havip_id}/eip", status_code=202, response_model=OperationAccepted, tags=["havips"])
async def associate_eip(
    havip_id: HaVipId,
    body: EipRequest,
    request: Request,
    principal: Tenant,
    context: Context,
    idempotency_key: IdempotencyKey = None,
) -> OperationAccepted:
    """Associate one of the tenant's EIPs (ENS AssociateEipAddress): its traffic then follows the HAVIP's owner."""
    command = AssociateEip(
        command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=havip_id, eip_id=body.eip_id
    )
    return await _submit_for_havip(
        context, request, command, body.model_dump(), idempotency_key, tenant_id=principal.tenant_id, havip_id=havip_id
    )


@router.delete("/havips/{havip_id}/eip", status_code=202, response_model=OperationAccepted, tags=["havips"])
async def release_eip(
    havip_id: HaVipId,
    request: Request,
    principal: Tenant,
    context: Context,
    eip_id: Annotated[Id | None, Query(description="Which EIP; may be left out when the HAVIP has one.")] = None,
    idempotency_key: IdempotencyKey = None,
) -> OperationAccepted:
    """Release the HAVIP's EIP (ENS UnAssociateEipAddress)."""

    async def command() -> TenantCommand:
        # Which EIP is resolved only for a new request: a retry is identified by what was sent.
        chosen = eip_id or await havips.only_eip(context.pool, principal.tenant_id, havip_id)
        return UnassociateEip(
            command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=havip_id, eip_id=chosen
        )

    as_sent = {"eip_id": eip_id} if eip_id is not None else {}
    return await _submit_for_havip(
        context, request, command, as_sent, idempotency_key, tenant_id=principal.tenant_id, havip_id=havip_id
    )


@router.get("/operations/{operation_id}", response_model=OperationView, tags=["operations"])
async def get_operation(
    operation_id: Annotated[Id, Path()],
    principal: Tenant,
    context: Context,
    wait: Annotated[
        str | None,
        Query(
            # Up to 30 s or 30000 ms, exactly what parse_wait accepts.
            pattern=WAIT_PATTERN,
            max_length=12,
            description="Hold the answer until the operation is terminal or this much time passed (≤ 30s).",
        ),
    ] = None,
) -> OperationView:
    found = await wait_for_outcome(context.pool, principal.tenant_id, operation_id, timeout=parse_wait(wait))
    if found is None:
        raise HaVipError(ErrorCode.NOT_FOUND_OPERATION, f"operation {operation_id} does not exist")
    return operation_view(found)


@router.get("/havips/{havip_id}/owner-history", response_model=OwnerHistoryPage, tags=["havips"])
async def get_owner_history(
    havip_id: HaVipId,
    principal: Tenant,
    context: Context,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    page_token: str | None = None,
) -> OwnerHistoryPage:
    """Every change of the HAVIP's owner with its cause and what caused it, newest first."""
    await havips.require_havip(context.pool, principal.tenant_id, havip_id)
    scope = {"havip_id": havip_id}
    before_id = numeric_cursor(decode_page_token(page_token, scope))
    found = await owner_history(context.pool, havip_id, before_id=before_id, limit=page_size + 1)
    page, next_token = cut_page(found, page_size, lambda change: str(change.id), scope)
    return OwnerHistoryPage(
        changes=[OwnerChangeView.model_validate(change, from_attributes=True) for change in page],
        next_page_token=next_token,
    )


async def _submit_for_havip(
    context: GatewayContext,
    request: Request,
    command: TenantCommand | Callable[[], Awaitable[TenantCommand]],
    wanted: dict[str, Any],
    idempotency_key: str | None,
    *,
    tenant_id: str,
    havip_id: str,
) -> OperationAccepted:
    idempotency = idempotency_of(idempotency_key, request, wanted)
    submitted = await context.commands.submit_for_havip(
        command, wanted, idempotency, tenant_id=tenant_id, havip_id=havip_id
    )
    return OperationAccepted(operation=operation_view(submitted.operation))
