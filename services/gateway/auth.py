"""Who is calling: a tenant (its HAVIPs and operations) or an agent (one instance's VRRP reports).

`authenticate` is the one way a presented token becomes a principal, counted and
throttled: the FastAPI dependencies below call it, and so does the report intake in
front of FastAPI (intake.py). A request the intake authenticated but then leaves to
FastAPI carries its principal along (`hand_on`), so it is counted once, as any other.
"""

from __future__ import annotations

from typing import Annotated, Literal, overload

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from schemas.errors import ErrorCode, HaVipError
from services.gateway.context import GatewayContext, gateway_context
from services.gateway.observability import AGENT_DIRECTORY_ANSWERS
from services.gateway.throttle import request_rate
from services.gateway.tokens import Principal, find_principal, hash_token

# auto_error=False: a missing token must answer our 401 body, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="A tenant token, or an agent token for /v1/vrrp-events")

# Where in the ASGI scope the intake leaves a principal it has already counted.
_COUNTED = "havip.counted_principal"


@overload
async def authenticate(
    context: GatewayContext, token: str | None, *, directory_only: Literal[False] = False
) -> Principal: ...
@overload
async def authenticate(
    context: GatewayContext, token: str | None, *, directory_only: Literal[True]
) -> Principal | None: ...
async def authenticate(context: GatewayContext, token: str | None, *, directory_only: bool = False) -> Principal | None:
    """The principal holding `token`, its request counted against the token's rate.

    Raises 401 for a missing or unknown token and 429 over the token's rate. Agents come
    from the directory (no database round trip); tenants, and agent tokens too new for the
    directory, from the database (unreachable, that answers 503 with Retry-After, never 401).
    With `directory_only` (the intake, which never waits for the database) the answer is None
    when only the database could tell, and nothing has been counted.
    """
    if not token:
        raise HaVipError(ErrorCode.UNAUTHORIZED, "an Authorization: Bearer token is required")
    token_sha256 = hash_token(token)
    principal = context.directory.principal(token_sha256)
    if principal is not None:
        AGENT_DIRECTORY_ANSWERS.labels("token", "directory").inc()
    elif directory_only:
        return None
    else:
        read_at_epoch = context.directory.epoch
        principal = await find_principal(context.pool, token)
        if principal is None:
            raise HaVipError(ErrorCode.UNAUTHORIZED, "the token is not valid")
        if principal.kind == "agent":
            AGENT_DIRECTORY_ANSWERS.labels("token", "database").inc()
            context.directory.learn_token(token_sha256, principal, read_at_epoch=read_at_epoch)
    # Counted only once the caller is known: nobody is throttled for a stranger's requests.
    rate, burst = request_rate(principal, context.settings)
    wait = context.throttle.take(principal.token_id, rate, burst)
    if wait is not None:
        raise HaVipError(
            ErrorCode.THROTTLED, f"this token may make {rate:g} requests per second; retry later", retry_after=wait
        )
    return principal


def hand_on(scope: Scope, principal: Principal) -> None:
    """Pass a request `authenticate` has counted on to FastAPI, which then neither looks up nor counts it again."""
    scope[_COUNTED] = principal


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    context: Annotated[GatewayContext, Depends(gateway_context)],
) -> Principal:
    counted: Principal | None = request.scope.get(_COUNTED)
    if counted is not None:
        return counted
    return await authenticate(context, credentials.credentials if credentials is not None else None)


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
