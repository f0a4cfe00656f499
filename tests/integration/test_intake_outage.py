"""Report intake survives a PostgreSQL outage; tenant calls answer 503 with Retry-After meanwhile.

The database sits behind a TCP proxy the test cuts, as a stopped server would be. The
gateway decides agent reports from its agent directory (in memory), so reports from
cached agent tokens are still accepted and published, and mapping applies them when
the database is back. The directory follows changes by LISTEN/NOTIFY: a revoked token
or a new attachment reaches other replicas within milliseconds (the bound asserted here
is a generous 10 s, so a loaded CI machine does not fail it; the measured time is printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from schemas import topics
from services.gateway.tokens import Principal, hash_token, revoke_token, store_token
from services.readmodel.reporters import ReporterStanding
from services.runtime.settings import Settings
from tests.integration.test_gateway import assert_error, attach_in_db, eventually, running_gateway, seed_havip
from tests.inventory_tools import TENANT, Publisher, instance, vswitch
from tests.kafka_tools import read_topic
from tests.net_tools import TcpProxy
from tests.pipeline_tools import bearer, succeeded

pytestmark = pytest.mark.integration

TENANT_TOKEN = "tok-outage-tenant"
# Generous, for a loaded CI machine: what is measured is milliseconds.
REPLICA_BOUND_SECONDS = 10.0


@contextlib.asynccontextmanager
async def proxied_database(settings: Settings) -> AsyncIterator[tuple[TcpProxy, str]]:
    proxy, proxied = TcpProxy.before(settings.database_url)
    await proxy.restore()
    try:
        yield proxy, proxied
    finally:
        await proxy.cut()


def report(havip_id: str, state: str, seq: int, priority: int = 100) -> dict[str, Any]:
    # No lease: a notify-style claim stays live until superseded, however long the outage lasts.
    return {"havip_id": havip_id, "state": state, "priority": priority, "seq": seq}


async def owner_of(db: asyncpg.Pool, havip_id: str) -> str | None:
    owner: str | None = await db.fetchval("SELECT owner_target_id FROM havips WHERE havip_id = $1", havip_id)
    return owner


async def until_ready_is(url: str, status: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            answer = await client.get(f"{url}/readyz")
            if answer.status_code == status:
                return dict(answer.json())
            assert time.monotonic() < deadline, answer.text
            await asyncio.sleep(0.2)


def assert_come_back_later(answer: httpx.Response) -> None:
    assert_error(answer, 503, "ServiceUnavailable")
    assert int(answer.headers["retry-after"]) >= 1


async def test_reports_go_on_through_a_postgres_outage_and_mapping_applies_them_after(
    settings: Settings,
    db: asyncpg.Pool,
    start_service: Callable[..., Any],
) -> None:
    await store_token(db, TENANT_TOKEN, Principal("tenant", TENANT))
    async with Publisher(settings) as publisher:
        await publisher.inventory([vswitch(), instance(1), instance(2), instance(3)])
    async with proxied_database(settings) as (proxy, proxied):
        # The whole stack behind the proxy: cutting it is a PostgreSQL outage for all of them.
        for service in ("quota", "mapping", "gateway"):
            await asyncio.to_thread(start_service, service, database_url=proxied)
        gateway_url = f"http://127.0.0.1:{settings.gateway_port}"
        async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as gateway:
            created = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-a"}, headers=bearer(TENANT_TOKEN))
            assert created.status_code == 202, created.text
            havip_id = created.json()["havip"]["havip_id"]
            for instance_id in ("i-1", "i-2"):
                path = f"/v1/havips/{havip_id}/associations"
                await succeeded(gateway, TENANT_TOKEN, "POST", path, json={"instance_id": instance_id})
            agent = {}
            for instance_id in ("i-1", "i-2", "i-3"):
                issued = await gateway.post(f"/v1/instances/{instance_id}/agent-tokens", headers=bearer(TENANT_TOKEN))
                assert issued.status_code == 201, issued.text
                agent[instance_id] = bearer(issued.json()["token"])
            assert (
                await gateway.post("/v1/vrrp-events", json=report(havip_id, "MASTER", 1), headers=agent["i-1"])
            ).status_code == 202
            assert (
                await gateway.post("/v1/vrrp-events", json=report(havip_id, "BACKUP", 1), headers=agent["i-2"])
            ).status_code == 202
            assert_error(
                await gateway.post("/v1/vrrp-events", json=report(havip_id, "MASTER", 1), headers=agent["i-3"]),
                409,
                "VrrpReport.NotAttached",
            )

            async def owned_by_i1() -> bool:
                return await owner_of(db, havip_id) == "i-1"

            await eventually(owned_by_i1, timeout=60)

            await proxy.cut()
            # Honest readiness: the database is away (reports are still taken, and a note says how).
            readiness = await until_ready_is(gateway_url, 503)
            assert "database" in readiness["reasons"], readiness

            # The failover, during the outage: i-2 takes over, i-1 steps back.
            during = [
                await gateway.post(
                    "/v1/vrrp-events", json=report(havip_id, "MASTER", 2, priority=200), headers=agent["i-2"]
                ),
                await gateway.post("/v1/vrrp-events", json=report(havip_id, "BACKUP", 2), headers=agent["i-1"]),
            ]
            assert [answer.status_code for answer in during] == [202, 202], [answer.text for answer in during]
            # Not attached is still known: 409 from the directory.
            assert_error(
                await gateway.post("/v1/vrrp-events", json=report(havip_id, "MASTER", 2), headers=agent["i-3"]),
                409,
                "VrrpReport.NotAttached",
            )
            # What the directory does not hold cannot be decided: 503 and come back, never 401.
            assert_come_back_later(
                await gateway.post("/v1/vrrp-events", json=report(havip_id, "MASTER", 2), headers=bearer("hva-unknown"))
            )
            published = await read_topic(settings, topics.VRRP, until=4, timeout=30)
            assert {message.message_id for message in published} >= {answer.json()["message_id"] for answer in during}

            async def noted() -> bool:
                return "agent_directory" in (await gateway.get("/readyz")).json()["notes"]

            await eventually(noted, timeout=30)

            # Tenant calls need the database: 503 with Retry-After, on one connection that stays open.
            connections: list[str] = []

            async def trace(event: str, _info: dict[str, Any]) -> None:
                if event.endswith("connect_tcp.started"):
                    connections.append(event)

            async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as tenant:
                for method, url, body in (
                    ("GET", "/v1/havips", None),
                    ("GET", f"/v1/havips/{havip_id}", None),
                    ("POST", "/v1/havips", {"vswitch_id": "vsw-a"}),
                    ("POST", "/v1/instances/i-1/agent-tokens", {}),
                    ("GET", "/v1/havips", None),
                ):
                    answer = await tenant.request(
                        method, url, json=body, headers=bearer(TENANT_TOKEN), extensions={"trace": trace}
                    )
                    assert_come_back_later(answer)
                    assert answer.headers.get("connection") != "close"
            assert len(connections) == 1, connections
            assert await owner_of(db, havip_id) == "i-1"  # mapping cannot apply anything yet

            await proxy.restore()

            async def owned_by_i2() -> bool:
                return await owner_of(db, havip_id) == "i-2"

            await eventually(owned_by_i2, timeout=60)
            await until_ready_is(gateway_url, 200)
            assert (await gateway.get(f"/v1/havips/{havip_id}", headers=bearer(TENANT_TOKEN))).status_code == 200
            assert (
                await gateway.post("/v1/vrrp-events", json=report(havip_id, "MASTER", 3, 200), headers=agent["i-2"])
            ).status_code == 202


async def until_true(check: Callable[[], bool], timeout: float = REPLICA_BOUND_SECONDS) -> float:
    """Seconds until `check()` holds, looked at every millisecond."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "not within the bound"
        await asyncio.sleep(0.001)
    return time.monotonic() - started


async def test_a_revoked_agent_token_stops_at_once_here_and_within_the_bound_on_another_replica(
    settings: Settings, db: asyncpg.Pool
) -> None:
    await store_token(db, TENANT_TOKEN, Principal("tenant", TENANT))
    await db.execute(
        "INSERT INTO instances VALUES ('i-1', $1, 'vpc-t', 'vsw-a', '10.1.0.101', 'Running', 'host-1', 1)", TENANT
    )
    await seed_havip(db, "havip-1", tenant_id=TENANT)
    await attach_in_db(db, "havip-1", "i-1")
    async with running_gateway(settings) as here, running_gateway(settings) as there:
        directories = [client._transport.app.state.gateway.directory for client in (here, there)]  # type: ignore[attr-defined]  # the app behind an ASGI transport
        by_api = await here.post("/v1/instances/i-1/agent-tokens", headers=bearer(TENANT_TOKEN))
        assert by_api.status_code == 201, by_api.text
        by_cli = await here.post("/v1/instances/i-1/agent-tokens", headers=bearer(TENANT_TOKEN))
        for issued in (by_api, by_cli):
            token_sha256 = hash_token(issued.json()["token"])
            issued_in = await until_true(lambda: all(d.principal(token_sha256) for d in directories))  # noqa: B023
            print(f"\nan issued agent token reached both replicas' directories in {issued_in * 1000:.1f} ms")
            for gateway in (here, there):
                answer = await gateway.post(
                    "/v1/vrrp-events", json=report("havip-1", "MASTER", 1), headers=bearer(issued.json()["token"])
                )
                assert answer.status_code == 202, answer.text

        # Revoked through this replica: refused by it from the very next request on.
        secret = by_api.json()["token"]
        revoked = await here.delete(
            f"/v1/instances/i-1/agent-tokens/{by_api.json()['token_id']}", headers=bearer(TENANT_TOKEN)
        )
        assert revoked.status_code == 204
        assert directories[0].principal(hash_token(secret)) is None
        there_took = await until_true(lambda: directories[1].principal(hash_token(secret)) is None)
        print(f"a revocation through one replica reached the other {there_took * 1000:.1f} ms after its answer")
        for gateway in (here, there):
            assert_error(
                await gateway.post("/v1/vrrp-events", json=report("havip-1", "MASTER", 2), headers=bearer(secret)),
                401,
                "Unauthorized",
            )

        # Revoked outside any replica (`havip admin token revoke`): every replica follows.
        secret = by_cli.json()["token"]
        await revoke_token(db, by_cli.json()["token_id"])
        both_took = await until_true(lambda: all(d.principal(hash_token(secret)) is None for d in directories))
        print(f"a revocation by `havip admin token revoke` reached both replicas in {both_took * 1000:.1f} ms")
        for gateway in (here, there):
            assert_error(
                await gateway.post("/v1/vrrp-events", json=report("havip-1", "MASTER", 3), headers=bearer(secret)),
                401,
                "Unauthorized",
            )


async def test_an_attachment_made_after_start_is_honoured_and_an_unknown_havip_waits_for_the_database(
    settings: Settings, db: asyncpg.Pool
) -> None:
    agent = "tok-outage-agent-i-1"
    await store_token(db, agent, Principal("agent", TENANT, "i-1"))
    await store_token(db, TENANT_TOKEN, Principal("tenant", TENANT))
    await seed_havip(db, "havip-1", tenant_id=TENANT)
    async with (
        proxied_database(settings) as (proxy, proxied),
        running_gateway(settings.model_copy(update={"database_url": proxied})) as gateway,
    ):
        directory = gateway._transport.app.state.gateway.directory  # type: ignore[attr-defined]  # ASGI transport's app
        assert_error(
            await gateway.post("/v1/vrrp-events", json=report("havip-1", "MASTER", 1), headers=bearer(agent)),
            409,
            "VrrpReport.NotAttached",
        )
        # Attached after start, as the mapping service does.
        await seed_havip(db, "havip-2", tenant_id=TENANT, ip_address="192.168.1.101")
        await attach_in_db(db, "havip-2", "i-1")
        took = await until_true(
            lambda: directory.standing(TENANT, "i-1", ["havip-2"]) == {"havip-2": ReporterStanding.ATTACHED}
        )
        print(f"\nan attachment reached the directory {took * 1000:.1f} ms after its commit")

        await proxy.cut()
        assert (
            await gateway.post("/v1/vrrp-events", json=report("havip-2", "MASTER", 2), headers=bearer(agent))
        ).status_code == 202
        # Created while this gateway cannot read the database: it cannot tell, so it says come back.
        await seed_havip(db, "havip-3", tenant_id=TENANT, ip_address="192.168.1.102")
        assert_come_back_later(
            await gateway.post("/v1/vrrp-events", json=report("havip-3", "MASTER", 2), headers=bearer(agent))
        )
        assert_come_back_later(await gateway.get("/v1/havips", headers=bearer(TENANT_TOKEN)))

        await proxy.restore()

        async def decided() -> bool:
            answer = await gateway.post("/v1/vrrp-events", json=report("havip-3", "MASTER", 3), headers=bearer(agent))
            return answer.status_code == 409

        await eventually(decided, timeout=30)
        assert directory.following


async def test_a_hung_database_is_an_outage_for_tenant_calls_not_a_request_that_never_ends(
    settings: Settings,
    db: asyncpg.Pool,
    start_service: Callable[..., Any],
) -> None:
    await store_token(db, TENANT_TOKEN, Principal("tenant", TENANT))
    async with proxied_database(settings) as (proxy, proxied):
        gateway_process = await asyncio.to_thread(start_service, "gateway", database_url=proxied)
        async with httpx.AsyncClient(base_url=gateway_process.url, timeout=60) as gateway:
            assert (await gateway.get("/v1/havips", headers=bearer(TENANT_TOKEN))).status_code == 200
            proxy.freeze()  # connections stay open; nothing answers
            started = time.monotonic()
            answer = await gateway.get("/v1/havips", headers=bearer(TENANT_TOKEN))
            waited = time.monotonic() - started
            assert_come_back_later(answer)
            # Within the statement timeout (5 s) and a connection attempt (5 s), never the client's 60 s.
            assert waited < settings.database_timeout_seconds + 10, waited
            proxy.thaw()

            async def answers() -> bool:
                return (await gateway.get("/v1/havips", headers=bearer(TENANT_TOKEN))).status_code == 200

            await eventually(answers, timeout=30)
            print(f"\na hung database answered 503 after {waited:.1f} s")
