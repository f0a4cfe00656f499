"""A dev-only route server that asks PostgreSQL, for `havip bench lookups` to compare with the forwarder.

It answers `GET /v1/routes?vpc_id=..&ip=..` with the forwarder's JSON shape
through the forwarder's own HTTP stack: uvicorn, the lean ASGI path of
services/forwarder/lookups.py in front of FastAPI (the shared conventions
middleware, its error answers), with one indexed query per request where the
forwarder reads its route table. So "forwarder vs this" is the cost of asking
the database, and "raw asyncpg vs this" the cost of the HTTP stack. Private
addresses only: the bench asks nothing else (a batch or an EIP is not found
here); what the lean path passes on, FastAPI validates and answers as the
forwarder's does.

Run it: `python -m services.dev.pg_routes --port N` (settings from HAVIP_*)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from schemas.errors import ErrorCode, HaVipError
from schemas.ipv4 import IPv4Text, parse_ipv4
from services.dev.embedded import exit_with_parent
from services.dev.processes import settings_env
from services.forwarder.lookups import MAX_VPC_ID_CHARS, RouteLookups, private_key_ok, route_query
from services.forwarder.routes import RouteTable
from services.runtime.db import connect_pool
from services.runtime.health import Health, health_router
from services.runtime.http import NO_NATIVE_TELEMETRY, install_http_conventions, run_http_service
from services.runtime.lean_http import FrontedApp
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings, load_settings

# The forwarder's answer for one address, from the mapping tables: the owner's fields are all
# null unless the owner's attachment and address are found, as in services/readmodel/mappings.py.
# Index: havips_vpc_ip (migration 0006); the joins are primary-key lookups.
ROUTE_BY_ADDRESS = """
SELECT h.havip_id, h.version, a.instance_id, a.eni_id,
       host(coalesce(e.private_ip, i.private_ip)) AS private_ip, i.host_id
  FROM havips h
  LEFT JOIN attachments a ON a.havip_id = h.havip_id AND a.target_id = h.owner_target_id
  LEFT JOIN instances i ON i.instance_id = a.instance_id
  LEFT JOIN enis e ON e.eni_id = a.eni_id
 WHERE h.vpc_id = $1 AND h.ip_address = $2::inet AND h.status <> 'Deleted'
 LIMIT 1
"""

POOL_SIZE = 32  # as many connections as wrk keeps open, so no request waits for one


async def lookup_route(db: asyncpg.Pool | asyncpg.Connection, vpc_id: str, ip: str) -> dict[str, Any] | None:
    """The forwarder's JSON for (vpc_id, ip), or None when no HAVIP holds it."""
    row = await db.fetchrow(ROUTE_BY_ADDRESS, vpc_id, ip)
    if row is None:
        return None
    owned = row["instance_id"] is not None and row["private_ip"] is not None
    return {
        "havip_id": row["havip_id"],
        "version": row["version"],
        "instance_id": row["instance_id"] if owned else None,
        "eni_id": row["eni_id"] if owned else None,
        "private_ip": row["private_ip"] if owned else None,
        "host_id": row["host_id"] if owned else None,
    }


class PostgresLookups(RouteLookups):
    """The forwarder's lookup path, answered by one query per request instead of the route table."""

    def __init__(self, app: ASGIApp, pools: list[asyncpg.Pool], max_body_bytes: int) -> None:
        super().__init__(app, RouteTable(), max_body_bytes, service="pg-routes")
        self._pools = pools  # filled by the app's lifespan, before the first request

    async def answer_one(self, query: bytes) -> tuple[int, bytes | str] | None:
        key = route_query(query)
        if key is None:
            return None
        vpc_id, ip, eip = key
        if eip is not None or not private_key_ok(vpc_id, ip):
            return None
        assert vpc_id is not None and ip is not None
        answer = await lookup_route(self._pools[0], vpc_id, ip)
        if answer is None:
            return 404, f"no HAVIP holds {ip} in {vpc_id}"
        return 200, json.dumps(answer, separators=(",", ":")).encode()

    def lookup_many(self, body: bytes) -> bytes | None:
        return None


def create_app(settings: Settings) -> FrontedApp:
    health = Health("pg-routes")
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pools.append(await connect_pool(settings.database_url, min_size=POOL_SIZE, max_size=POOL_SIZE))
        health.start()
        try:
            yield
        finally:
            await health.stop()
            await pools.pop().close()

    app = FrontedApp(
        title="havip pg-routes (bench only)", version="1", lifespan=lifespan, telemetry=NO_NATIVE_TELEMETRY
    )
    app.include_router(health_router(health))
    install_http_conventions(app, "pg-routes", max_request_body_bytes=settings.max_request_body_bytes)

    # What the lean path passes on (a percent-escaped query, a bad key): validated and answered here.
    @app.get("/v1/routes")
    async def get_route(
        ip: Annotated[IPv4Text, Query()], vpc_id: Annotated[str, Query(min_length=1, max_length=MAX_VPC_ID_CHARS)]
    ) -> JSONResponse:
        answer = await lookup_route(pools[0], vpc_id, str(parse_ipv4(ip)))
        if answer is None:
            raise HaVipError(ErrorCode.NOT_FOUND_ROUTE, f"no HAVIP holds {ip} in {vpc_id}")
        return JSONResponse(answer)

    # In front of the whole app, as in the forwarder (services/forwarder/app.py).
    app.put_in_front(PostgresLookups, pools=pools, max_body_bytes=settings.max_request_body_bytes)
    return app


def start_pg_routes(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    """This server as a child process that dies with us; wait for its /readyz before using it."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.dev.pg_routes", "--port", str(port)],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=exit_with_parent,
            start_new_session=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    settings = load_settings()
    setup_logging("pg-routes", settings.log_level)
    run_http_service(create_app(settings), "pg-routes", settings.http_host, port)


if __name__ == "__main__":
    main()
