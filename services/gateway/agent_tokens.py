"""Agent tokens over the API: a tenant issues, lists and revokes the tokens of its instances' agents.

An agent token speaks for one instance (its VRRP reports) and nothing else.
The instance must be the tenant's: unknown, deleted and other tenants'
instances all answer `NotFound.Instance`, so the API never confirms that
someone else's instance exists.

POST and DELETE honour `Idempotency-Key`. The first answer to a POST holds
the token's secret, so it is stored sealed (`services.gateway.sealed`) with
a key only the same caller repeating the same Idempotency-Key can derive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import ErrorCode, HaVipError
from schemas.messages import Id
from services.gateway import tokens
from services.gateway.auth import CallerToken, Tenant
from services.gateway.context import GatewayContext, gateway_context
from services.gateway.idempotency import Idempotency, IdempotencyKey, idempotency_of, in_flight
from services.gateway.models import NO_NUL_PATTERN
from services.gateway.sealed import SealBroken, seal, unseal
from services.readmodel.instances import find_instance
from services.runtime.openapi import ErrorBody

Context = Annotated[GatewayContext, Depends(gateway_context)]
InstanceId = Annotated[Id, Path()]
TokenId = Annotated[Id, Path()]

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 429)}
_MISMATCH: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "IdempotentParameterMismatch: the Idempotency-Key was used otherwise."}
}

router = APIRouter(prefix="/v1", tags=["agents"], responses=_ERRORS)


class AgentTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=128, pattern=NO_NUL_PATTERN)


class AgentTokenIssued(BaseModel):
    token_id: str
    token: str = Field(description="The secret: shown in this answer only. Give it to the instance's agent.")
    instance_id: str
    description: str
    created_at: datetime


class AgentTokenView(BaseModel):
    token_id: str
    instance_id: str
    description: str
    created_at: datetime
    revoked_at: datetime | None = None


class AgentTokenList(BaseModel):
    tokens: list[AgentTokenView] = Field(description="Oldest first, revoked ones included; never a secret.")


def _view(info: tokens.TokenInfo) -> AgentTokenView:
    return AgentTokenView(
        token_id=info.token_id,
        instance_id=info.instance_id or "",
        description=info.description,
        created_at=info.created_at,
        revoked_at=info.revoked_at,
    )


def _response(status: int, body: bytes) -> Response:
    if status == 204:
        return Response(status_code=204)
    return Response(content=body, status_code=status, media_type="application/json")


@router.post(
    "/instances/{instance_id}/agent-tokens",
    status_code=201,
    response_model=AgentTokenIssued,
    responses={
        404: {"model": ErrorBody, "description": "NotFound.Instance: not one of the tenant's instances."},
        **_MISMATCH,
    },
)
async def issue_agent_token(
    instance_id: InstanceId,
    request: Request,
    principal: Tenant,
    secret: CallerToken,
    context: Context,
    body: Annotated[AgentTokenRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A token for the agent on one of the tenant's instances; its secret is in this answer only."""
    wanted = body or AgentTokenRequest()

    async def issue(conn: asyncpg.Connection) -> tuple[int, bytes]:
        if await find_instance(conn, principal.tenant_id, instance_id) is None:
            raise HaVipError(ErrorCode.NOT_FOUND_INSTANCE, f"instance {instance_id} does not exist")
        issued = await tokens.issue_token(conn, "agent", principal.tenant_id, instance_id, wanted.description)
        answer = AgentTokenIssued(
            token_id=issued.info.token_id,
            token=issued.token,
            instance_id=instance_id,
            description=issued.info.description,
            created_at=issued.info.created_at,
        )
        return 201, answer.model_dump_json().encode()

    status, answer = await _answer_once(
        context, principal.tenant_id, secret, idempotency_key, request, wanted.model_dump(), issue
    )
    return _response(status, answer)


@router.get("/instances/{instance_id}/agent-tokens", response_model=AgentTokenList)
async def list_agent_tokens(instance_id: InstanceId, principal: Tenant, context: Context) -> AgentTokenList:
    found = await tokens.list_tokens(context.pool, principal.tenant_id, instance_id=instance_id)
    # Tokens outlive their instance (so they can still be listed and revoked once it is deleted).
    if not found and await find_instance(context.pool, principal.tenant_id, instance_id) is None:
        raise HaVipError(ErrorCode.NOT_FOUND_INSTANCE, f"instance {instance_id} does not exist")
    return AgentTokenList(tokens=[_view(info) for info in found])


@router.delete(
    "/instances/{instance_id}/agent-tokens/{token_id}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorBody, "description": "NotFound.Token: not a token of this instance."}, **_MISMATCH},
)
async def revoke_agent_token(
    instance_id: InstanceId,
    token_id: TokenId,
    request: Request,
    principal: Tenant,
    secret: CallerToken,
    context: Context,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Revoke at once: the token answers 401 from its next request on (on other gateway replicas
    within milliseconds). Revoking it again answers 204."""

    async def revoke(conn: asyncpg.Connection) -> tuple[int, bytes]:
        revoked = await tokens.revoke_token(conn, token_id, tenant_id=principal.tenant_id, instance_id=instance_id)
        if revoked is None:
            raise HaVipError(ErrorCode.NOT_FOUND_TOKEN, f"token {token_id} does not exist")
        return 204, b""

    status, answer = await _answer_once(context, principal.tenant_id, secret, idempotency_key, request, {}, revoke)
    # Committed: refused here from the next request on; other replicas follow the database's notification.
    context.directory.forget_token(token_id)
    return _response(status, answer)


# --- idempotent answers ------------------------------------------------------------------------


async def _answer_once(
    context: GatewayContext,
    tenant_id: str,
    secret: str,
    idempotency_key: str | None,
    request: Request,
    wanted: dict[str, Any],
    act: Callable[[asyncpg.Connection], Awaitable[tuple[int, bytes]]],
) -> tuple[int, bytes]:
    """Act once per Idempotency-Key: the action and its recorded answer commit together or not at all.

    A refusal (an HaVipError) is not recorded: the same request may succeed later.
    """
    idempotency = idempotency_of(idempotency_key, request, wanted)
    key = idempotency.key
    if key is not None:
        earlier = await _replay(context.pool, tenant_id, idempotency, secret)
        if earlier is not None:
            return earlier
    try:
        async with context.pool.acquire() as conn, conn.transaction():
            status, answer = await act(conn)
            if key is not None:
                # Waits for a concurrent request inserting the same key; fails once that one commits.
                await conn.execute(
                    "INSERT INTO idempotent_answers (tenant_id, idempotency_key, request_hash, status, sealed_body)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    tenant_id,
                    key,
                    idempotency.request_hash,
                    status,
                    seal(answer, secret, key),
                )
    except asyncpg.UniqueViolationError as exc:
        if key is None or exc.table_name != "idempotent_answers":
            raise
        # Two identical requests raced and the other one won: answer as it did (our action rolled back).
        earlier = await _replay(context.pool, tenant_id, idempotency, secret)
        if earlier is None:
            raise in_flight() from exc
        return earlier
    return status, answer


async def _replay(db: asyncpg.Pool, tenant_id: str, idempotency: Idempotency, secret: str) -> tuple[int, bytes] | None:
    assert idempotency.key is not None
    row = await db.fetchrow(
        "SELECT request_hash, status, sealed_body FROM idempotent_answers"
        " WHERE tenant_id = $1 AND idempotency_key = $2",
        tenant_id,
        idempotency.key,
    )
    if row is None:
        return None
    idempotency.check_replay(row["request_hash"])
    try:
        return row["status"], unseal(row["sealed_body"], secret, idempotency.key)
    except SealBroken:
        # Another of the tenant's tokens used this key first; only that token can open its answer.
        raise HaVipError(
            ErrorCode.IDEMPOTENT_MISMATCH, "this Idempotency-Key was used by another token of this tenant"
        ) from None
