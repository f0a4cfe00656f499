"""Who is calling: a tenant (its HAVIPs and operations) or an agent (one instance's VRRP reports)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from schemas.errors import ErrorCode, HaVipError
from services.gateway.context import GatewayContext, gateway_context
from services.gateway.observability import AGENT_DIRECTORY_ANSWERS
from services.gateway.throttle import request_rate
from services.gateway.tokens import Principal, find_principal, hash_token

# auto_error=False: a missing token must answer our 401 body, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="A tenant token, or an agent token for /v1/vrrp-events")


async def _principal(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    context: Annotated[GatewayContext, Depends(gateway_context)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise HaVipError(ErrorCode.UNAUTHORIZED, "an Authorization: Bearer token is required")
    principal = await _holder(context, credentials.credentials)
    if principal is None:
        raise HaVipError(ErrorCode.UNAUTHORIZED, "the token is not valid")
    # Counted only once the caller is known: nobody is throttled for a stranger's requests.
    rate, burst = request_rate(principal, context.settings)
    wait = context.throttle.take(principal.token_id, rate, burst)
    if wait is not None:
        raise HaVipError(
            ErrorCode.THROTTLED, f"this token may make {rate:g} requests per second; retry later", retry_after=wait
        )
    return principal


async def _holder(context: GatewayContext, token: str) -> Principal | None:
    """Agents from the directory (no database round trip); tenants, and agent tokens too new for
    the directory, from the database. Unreachable, that answers 503 with Retry-After, never 401."""
    token_sha256 = hash_token(token)
    held = context.directory.principal(token_sha256)
    if held is not None:
        AGENT_DIRECTORY_ANSWERS.labels("token", "directory").inc()
        return held
    read_at_epoch = context.directory.epoch
    principal = await find_principal(context.pool, token)
    if principal is not None and principal.kind == "agent":
        AGENT_DIRECTORY_ANSWERS.labels("token", "database").inc()
        context.directory.learn_token(token_sha256, principal, read_at_epoch=read_at_epoch)
    return principal


async def tenant(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if principal.kind != "tenant":
        raise HaVipError(ErrorCode.FORBIDDEN, "this call needs a tenant token")
    return principal


async def agent(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    # An agent token speaks for exactly one instance and nothing else.
    if principal.kind != "agent" or principal.instance_id is None:
        raise HaVipError(ErrorCode.FORBIDDEN, "this call needs an agent token")
    return principal


async def caller_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The caller's own bearer token, for what only that caller may open (sealed answers).

    Declare it after `Tenant` or `Agent`, which have already authenticated it.
    """
    if credentials is None or not credentials.credentials:
        raise HaVipError(ErrorCode.UNAUTHORIZED, "an Authorization: Bearer token is required")
    return credentials.credentials


Tenant = Annotated[Principal, Depends(tenant)]
Agent = Annotated[Principal, Depends(agent)]
CallerToken = Annotated[str, Depends(caller_token)]
