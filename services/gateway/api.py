"""The REST API: tenants' HAVIPs and operations, and agents' VRRP reports.

Each mutation reads: check (auth, syntax, the HAVIP is the tenant's) →
record the operation → publish the command → 202. Whether the command is
allowed (limits, inventory, addresses) is decided downstream by quota, and
the tenant learns it from `GET /v1/operations/{id}`.
"""

from __future__ import annotations

import logging
import re
import secrets
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
from services.gateway import havips, operations
from services.gateway.auth import Tenant
from services.gateway.commands import Idempotency, new_operation_id
from services.gateway.context import GatewayContext, gateway_context
from services.gateway.idempotency import IdempotencyKey, check_idempotency_key, request_fingerprint
from services.gateway.models import (
    AssociationRequest,
    CreateHaVipRequest,
    EipRequest,
    HaVipAccepted,
    HaVipPage,
    HaVipView,
    OperationAccepted,
    OperationError,
    OperationView,
    OwnerChangeView,
    OwnerHistoryPage,
    check_havip_address,
)
from services.gateway.operations import Operation
from services.gateway.paging import decode_page_token, encode_page_token
from services.readmodel.owner_history import owner_history
from services.runtime.openapi import ErrorBody

log = logging.getLogger(__name__)

Context = Annotated[GatewayContext, Depends(gateway_context)]
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
        status=operation.status,
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
    """Replay first: a retried request gets its first answer even if the HAVIP has changed since
    (a retried delete must not answer that the HAVIP does not exist). Only a new request is checked."""
    idempotency = _idempotency(idempotency_key, request, wanted)
    earlier = await context.commands.replay(tenant_id, idempotency)
    if earlier is None:
        await _require_havip(context, tenant_id, havip_id)
        resolved = command if not callable(command) else await command()
        earlier = await context.commands.submit(resolved, wanted, idempotency)
    return OperationAccepted(operation=operation_view(earlier.operation))


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
        chosen = eip_id or await _only_eip(context, principal.tenant_id, havip_id)
        return UnassociateEip(
            command_id=new_operation_id(), tenant_id=principal.tenant_id, havip_id=havip_id, eip_id=chosen
        )

    as_sent = {"eip_id": eip_id} if eip_id is not None else {}
    return await _submit_for_havip(
        context, request, command, as_sent, idempotency_key, tenant_id=principal.tenant_id, havip_id=havip_id
    )


async def _only_eip(context: GatewayContext, tenant_id: str, havip_id: str) -> str:
    found = await havips.find_havip(context.pool, tenant_id, havip_id)
    eips = found.eips if found is not None else []
    if not eips:
        raise HaVipError(ErrorCode.NOT_FOUND_EIP, f"{havip_id} has no EIP")
    if len(eips) > 1:
        raise HaVipError(ErrorCode.INVALID_PARAMETER, f"{havip_id} has {len(eips)} EIPs; name one with eip_id")
    return eips[0].eip_id


MAX_WAIT_SECONDS = 30.0
WAIT_PATTERN = r"^((30(\.0{1,3})?|[12]?[0-9](\.[0-9]{1,3})?)s?|(30000(\.0{1,3})?|[12]?[0-9]{1,4}(\.[0-9]{1,3})?)ms)$"


def parse_wait(text: str | None) -> float:
    """`5s`, `500ms` or `5` (seconds), at most 30 s: how long a read may wait for a terminal state."""
    if text is None:
        return 0.0
    match = re.fullmatch(r"(\d{1,5}(?:\.\d{1,3})?)(ms|s)?", text)
    if match is None:
        raise HaVipError(ErrorCode.INVALID_PARAMETER, "wait must look like 5s, 500ms or 5")
    seconds = float(match[1]) / (1000 if match[2] == "ms" else 1)
    if seconds > MAX_WAIT_SECONDS:
        raise HaVipError(ErrorCode.INVALID_PARAMETER, f"wait may be at most {MAX_WAIT_SECONDS:.0f}s")
    return seconds


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
    found = await operations.wait_for_outcome(context.pool, principal.tenant_id, operation_id, timeout=parse_wait(wait))
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
