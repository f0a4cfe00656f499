"""The forwarder's HTTP API: "who receives traffic for (vpc, ip)?", answered from memory.

    GET  /v1/routes?vpc_id=..&ip=..   one private address in a VPC
    GET  /v1/routes?eip=..            one public EIP: it resolves through its HAVIP
    POST /v1/routes:batch             up to 1000 keys ({vpc_id, ip} or {eip}), answers in the same order
    GET  /v1/routes:watch             a stream of every change, for agents that keep their own copy

An address a HAVIP holds answers its owner, or null owner fields when the
HAVIP has no owner (traffic is dropped, and that is visible); an address no
HAVIP holds is a 404 `NotFound.Route`. Errors are always `{code, message,
request_id}`.

The first two are answered by services/forwarder/lookups.py in front of
FastAPI whenever the request is well formed, the watch by
services/forwarder/watch_answers.py; the handlers below answer the rest (and
describe all of them in the OpenAPI document), so both must give the same
answers: tests/integration/test_forwarder_lookups.py and
tests/integration/test_forwarder_watch_answers.py check it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.errors import ErrorCode, HaVipError
from schemas.ipv4 import IPv4Text
from services.forwarder.follower import MappingFollower
from services.forwarder.lookups import MAX_BATCH_KEYS, MAX_VPC_ID_CHARS, RouteLookups
from services.forwarder.metrics import WATCHERS
from services.forwarder.routes import HeldRoute, RouteTable, canonical_ip
from services.forwarder.settings import forwarder_settings
from services.forwarder.watch import WatchFilter, WatchHub
from services.forwarder.watch_answers import EPOCH_PATTERN, MAX_HOST_ID_CHARS, RouteWatches
from services.forwarder.watch_stream import WatchResponse
from services.runtime.broker_watch import BrokerWatch, LogCheck
from services.runtime.db import DatabaseProbe, connect_pool, require_current_schema
from services.runtime.health import Health, health_router
from services.runtime.http import NO_NATIVE_TELEMETRY, install_http_conventions
from services.runtime.lean_http import FrontedApp
from services.runtime.openapi import ErrorBody
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["MAX_BATCH_KEYS", "create_app"]


class RouteOut(BaseModel):
    havip_id: str
    version: int
    instance_id: str | None
    eni_id: str | None
    private_ip: str | None
    host_id: str | None


class RouteKey(BaseModel):
    """A private address in its VPC, or a public EIP."""

    model_config = ConfigDict(extra="forbid")

    vpc_id: str | None = Field(default=None, min_length=1, max_length=MAX_VPC_ID_CHARS)
    ip: IPv4Text | None = None
    eip: IPv4Text | None = None

    @model_validator(mode="after")
    def _one_kind_of_key(self) -> RouteKey:
        if not route_key_complete(self.vpc_id, self.ip, self.eip):
            raise ValueError(ROUTE_KEY_RULE)
        return self


ROUTE_KEY_RULE = "give vpc_id and ip (a private address), or eip alone (a public address)"


def route_key_complete(vpc_id: str | None, ip: str | None, eip: str | None) -> bool:
    private = vpc_id is not None and ip is not None
    return private != (eip is not None) and (private or (vpc_id is None and ip is None))


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[RouteKey] = Field(max_length=MAX_BATCH_KEYS)


class BatchOut(BaseModel):
    routes: list[RouteOut | None]


def create_app(shared_settings: Settings) -> FrontedApp:
    settings = forwarder_settings(shared_settings)
    health = Health("forwarder")
    table = RouteTable()
    hub = WatchHub(table, log_size=settings.forwarder_watch_log, buffer_size=settings.forwarder_watch_buffer)
    WATCHERS.set_function(lambda: len(hub))
    follower: MappingFollower | None = None

    def caught_up() -> str | None:
        return "starting" if follower is None else follower.not_caught_up()

    def loaded() -> bool:
        return follower is not None and follower.caught_up

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

            async def reload(_: LogCheck) -> None:
                assert follower is not None
                await follower.reload()

            # Unready while the broker or PostgreSQL is away, although lookups keep answering
            # from memory: what they answer may be going stale, and the operator should see it.
            database = DatabaseProbe(pool)
            database.start()
            broker = BrokerWatch(settings, "forwarder", pool, reload)
            broker.start()
            health.add_check("database", lambda: database.problem)
            health.add_check("broker", lambda: broker.problem)
            try:
                yield
            finally:
                await broker.stop()
                await database.stop()
                await follower.stop()
                await health.stop()
                log.info("forwarder stopped havips=%s", len(table))
        finally:
            await pool.close()

    app = FrontedApp(title="havip forwarder", version="1", lifespan=lifespan, telemetry=NO_NATIVE_TELEMETRY)
    app.state.table = table
    app.state.hub = hub
    app.state.health = health
    app.include_router(health_router(health))
    install_http_conventions(app, "forwarder", max_request_body_bytes=settings.max_request_body_bytes)

    # 400, 413, 500 and the rest are documented for every route by services.runtime.openapi.
    miss: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "No HAVIP holds it: NotFound.Route"}
    }

    @app.get("/v1/routes", response_model=RouteOut, responses=miss)
    async def get_route(
        ip: Annotated[IPv4Text | None, Query(description="A private IPv4 address, with vpc_id")] = None,
        vpc_id: Annotated[str | None, Query(min_length=1, max_length=MAX_VPC_ID_CHARS)] = None,
        eip: Annotated[IPv4Text | None, Query(description="A public EIP, alone")] = None,
    ) -> Response:
        if not route_key_complete(vpc_id, ip, eip):
            raise HaVipError(ErrorCode.INVALID_PARAMETER, ROUTE_KEY_RULE)
        route = _lookup(table, vpc_id, ip, eip)
        if route is None:
            where = f"{ip} in {vpc_id}" if eip is None else f"public address {eip}"
            raise HaVipError(ErrorCode.NOT_FOUND_ROUTE, f"no HAVIP holds {where}")
        return Response(route.answer, media_type="application/json")

    @app.post("/v1/routes:batch", response_model=BatchOut)
    async def batch_routes(body: BatchIn) -> Response:
        found = [_lookup(table, key.vpc_id, key.ip, key.eip) for key in body.keys]
        answers = b",".join(b"null" if route is None else route.answer for route in found)
        return Response(b'{"routes":[' + answers + b"]}", media_type="application/json")

    @app.get(
        "/v1/routes:watch",
        response_class=StreamingResponse,
        description=WATCH_DESCRIPTION,
        responses={
            200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines, until the client leaves"},
            503: {"model": ErrorBody, "description": "The route table is still loading: ServiceUnavailable"},
        },
    )
    async def watch_routes(
        vpc_id: Annotated[
            str | None, Query(min_length=1, max_length=MAX_VPC_ID_CHARS, description="Only this VPC")
        ] = None,
        host_id: Annotated[
            str | None, Query(min_length=1, max_length=MAX_HOST_ID_CHARS, description="Only routes to this host")
        ] = None,
        since: Annotated[int | None, Query(ge=0, description="The last revision you have, with epoch")] = None,
        epoch: Annotated[str | None, Query(pattern=EPOCH_PATTERN, description="The epoch of since")] = None,
    ) -> Response:
        if not loaded():
            raise HaVipError(ErrorCode.SERVICE_UNAVAILABLE, "the route table is still loading; watch again shortly")
        return WatchResponse(
            hub,
            WatchFilter(vpc_id, host_id),
            epoch=epoch,
            since=since,
            heartbeat_seconds=settings.forwarder_watch_heartbeat_seconds,
        )

    # In front of the whole app: a well-formed lookup or watch meets nothing else.
    heartbeat = settings.forwarder_watch_heartbeat_seconds
    app.put_in_front(RouteWatches, hub=hub, ready=loaded, heartbeat_seconds=heartbeat)
    app.put_in_front(RouteLookups, table=table, max_body_bytes=settings.max_request_body_bytes)
    return app


WATCH_DESCRIPTION = """\
A stream of JSON lines (chunked) for data-plane agents that keep their own copy of the routes.

1. `{"type":"hello","epoch":E,"revision":R,"resync":B}`. With `resync` true, drop your copy: the
   whole table (filtered) follows. Otherwise only what changed after `since` follows.
2. `{"type":"route",...}` lines (`revision`, `havip_id`, `version`, `vpc_id`, `ip`, `eips`, and the
   owner: `instance_id`, `eni_id`, `private_ip`, `host_id`), and `{"type":"removed","revision":N,
   "havip_id":..,"version":..}` for a deleted HAVIP.
3. `{"type":"synced","revision":R}`: your copy is the table's as of R.
4. Then every change as it is applied, in order, and `{"type":"heartbeat","revision":N}` when idle.

Filters: `vpc_id`, `host_id` (the owner's host), or both. A route that leaves what you watch is
sent once more, showing where it went (another `host_id`, or null when it has no owner): drop it.

Positions: remember the `revision` of the last line you processed and the `epoch`; watch again
with `since` and `epoch` to get only what you missed. A forwarder that restarted has a new epoch;
a position older than the changes it remembers (`HAVIP_FORWARDER_WATCH_LOG`), or one you fell
behind from, gets the whole table again (`resync` true).

A watcher that reads too slowly (more than `HAVIP_FORWARDER_WATCH_BUFFER` changes waiting) gets
`{"type":"resync","reason":..}` and the stream ends: watch again without `since`. 503 until the
forwarder has loaded its table.
"""


def _lookup(table: RouteTable, vpc_id: str | None, ip: str | None, eip: str | None) -> HeldRoute | None:
    # The pattern already admitted only canonical dotted quads; check once more to be sure of the key's form.
    if eip is not None:
        return table.lookup_public(canonical_ip(eip))
    assert vpc_id is not None and ip is not None
    return table.lookup(vpc_id, canonical_ip(ip))
