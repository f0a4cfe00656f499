"""The forwarder's HTTP API: "who receives traffic for (vpc, ip)?", answered from memory.

    GET  /v1/routes?vpc_id=..&ip=..   one address; without vpc_id, `ip` is a public EIP
    POST /v1/routes:batch             up to 1000 addresses, answers in the same order

An address a HAVIP holds answers its owner, or null owner fields when the
HAVIP has no owner (traffic is dropped, and that is visible); an address no
HAVIP holds is a 404 `NotFound.Route`. Errors are always `{code, message,
request_id}`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import ErrorCode, HaVipError
from schemas.ipv4 import parse_ipv4
from services.forwarder.follower import MappingFollower
from services.forwarder.routes import RouteAnswer, RouteTable
from services.runtime.db import connect_pool, require_current_schema
from services.runtime.health import Health, health_router
from services.runtime.http import install_http_conventions
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

MAX_BATCH_KEYS = 1000


class RouteOut(BaseModel):
    havip_id: str
    version: int
    instance_id: str | None
    eni_id: str | None
    private_ip: str | None
    host_id: str | None


class RouteKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vpc_id: str | None = Field(default=None, min_length=1, max_length=128)
    ip: str = Field(min_length=1, max_length=64)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[RouteKey] = Field(max_length=MAX_BATCH_KEYS)


class BatchOut(BaseModel):
    routes: list[RouteOut | None]


class ErrorOut(BaseModel):
    code: str
    message: str
    request_id: str


def create_app(settings: Settings) -> FastAPI:
    health = Health("forwarder")
    table = RouteTable()
    follower: MappingFollower | None = None

    def caught_up() -> str | None:
        return "starting" if follower is None else follower.not_caught_up()

    health.add_check("caught up", caught_up)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal follower
        pool = await connect_pool(settings.database_url)
        try:
            await require_current_schema(pool)  # refuse to start against an older schema
            health.start()
            follower = MappingFollower(settings, pool, table)
            app.state.follower = follower
            follower.start()
            try:
                yield
            finally:
                await follower.stop()
                await health.stop()
                log.info("forwarder stopped havips=%s", len(table))
        finally:
            await pool.close()

    app = FastAPI(title="havip forwarder", version="1", lifespan=lifespan)
    app.state.table = table
    app.state.health = health
    app.include_router(health_router(health))
    install_http_conventions(app, "forwarder")

    errors: dict[int | str, dict[str, Any]] = {400: {"model": ErrorOut}, 404: {"model": ErrorOut}}

    @app.get("/v1/routes", response_model=RouteOut, responses=errors)
    async def get_route(
        ip: str = Query(max_length=64, description="A private IPv4 address, or a public EIP without vpc_id"),
        vpc_id: str | None = Query(default=None, min_length=1, max_length=128),
    ) -> JSONResponse:
        answer = _lookup(table, vpc_id, ip)
        if answer is None:
            where = f"{ip} in {vpc_id}" if vpc_id is not None else f"public address {ip}"
            raise HaVipError(ErrorCode.NOT_FOUND_ROUTE, f"no HAVIP holds {where}")
        return JSONResponse(_as_json(answer))

    @app.post("/v1/routes:batch", response_model=BatchOut, responses={400: {"model": ErrorOut}})
    async def batch_routes(body: BatchIn) -> JSONResponse:
        found = [_lookup(table, key.vpc_id, key.ip) for key in body.keys]
        return JSONResponse({"routes": [_as_json(a) if a is not None else None for a in found]})

    return app


def _lookup(table: RouteTable, vpc_id: str | None, ip: str) -> RouteAnswer | None:
    try:
        address = str(parse_ipv4(ip))
    except HaVipError:
        raise HaVipError(ErrorCode.INVALID_PARAMETER, f"ip {ip!r} is not an IPv4 address") from None
    return table.lookup(vpc_id, address) if vpc_id is not None else table.lookup_public(address)


def _as_json(answer: RouteAnswer) -> dict[str, Any]:
    owner = answer.owner
    return {
        "havip_id": answer.havip_id,
        "version": answer.version,
        "instance_id": owner.instance_id if owner else None,
        "eni_id": owner.eni_id if owner else None,
        "private_ip": owner.private_ip if owner else None,
        "host_id": owner.host_id if owner else None,
    }
