"""Lease renewals reach the election without a record on `vrrp.events`; state changes still go there.

A real gateway, a real mapping worker, a real broker and PostgreSQL. An agent claims MASTER,
renews it every so often and steps down: the claim and the step-down are the only records on
the log, and the renewals extend the claim's lease all the same. With PostgreSQL away the
gateway carries renewals on the log instead, so an outage never costs a live claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from schemas import topics
from schemas.messages import VrrpReported
from services.dev.processes import ServiceProcess
from services.gateway.tokens import Principal, store_token
from services.runtime.settings import Settings
from tests.integration.test_gateway import AGENT_TOKEN, attach_in_db, bearer, running_gateway, seed_havip
from tests.kafka_tools import read_topic
from tests.net_tools import TcpProxy

pytestmark = pytest.mark.integration


def claim(seq: int, state: str = "MASTER") -> dict[str, object]:
    lease = {"lease_seconds": 2.5} if state == "MASTER" else {}
    return {"havip_id": "havip-1", "state": state, "priority": 150, "seq": seq, **lease}


async def until(check: Callable[[], Awaitable[object]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


async def test_renewals_extend_the_claim_without_a_record_on_the_log(
    settings: Settings,
    db: asyncpg.Pool,
    start_service: Callable[..., ServiceProcess],
) -> None:
    await store_token(db, AGENT_TOKEN, Principal("agent", "tenant-a", "i-web1"))
    await seed_havip(db, "havip-1")
    await db.execute(
        "INSERT INTO instances VALUES ('i-web1', 'tenant-a', 'vpc-1', 'vsw-1', '192.168.1.11', 'Running', 'host-a', 1)"
    )
    await attach_in_db(db, "havip-1", "i-web1")
    start_service("mapping")
    agent = bearer(AGENT_TOKEN)
    async with running_gateway(settings) as gateway:
        assert (await gateway.post("/v1/vrrp-events", json=claim(1), headers=agent)).status_code == 202

        async def owned() -> bool:
            return bool(await db.fetchval("SELECT owner_target_id = 'i-web1' FROM havips WHERE havip_id = 'havip-1'"))

        await until(owned)
        for seq in range(2, 7):  # the agent renews while keepalived holds MASTER
            answer = await gateway.post("/v1/vrrp-events", json=claim(seq), headers=agent)
            assert answer.status_code == 202, answer.text
            await asyncio.sleep(0.3)

        async def renewed() -> bool:
            row = await db.fetchrow(
                "SELECT seq, received_at, expires_at FROM vrrp_reports WHERE instance_id = 'i-web1'"
            )
            return row is not None and row["seq"] == 6

        await until(renewed)
        row = await db.fetchrow("SELECT received_at, expires_at FROM vrrp_reports WHERE instance_id = 'i-web1'")
        assert row["expires_at"] - row["received_at"] == timedelta(seconds=2.5)
        assert await db.fetchval("SELECT taken FROM claim_renewals WHERE instance_id = 'i-web1'") is True

        assert (await gateway.post("/v1/vrrp-events", json=claim(7, "BACKUP"), headers=agent)).status_code == 202

        async def released() -> bool:
            return bool(await db.fetchval("SELECT owner_target_id IS NULL FROM havips WHERE havip_id = 'havip-1'"))

        await until(released)
    logged = await read_topic(settings, topics.VRRP, until=2, timeout=5)
    assert [(r.seq, r.state.value) for r in logged if isinstance(r, VrrpReported)] == [(1, "MASTER"), (7, "BACKUP")]
    changes = await db.fetch("SELECT cause FROM owner_changes WHERE havip_id = 'havip-1' ORDER BY id")
    assert [c["cause"] for c in changes] == ["MasterReported", "OwnerReleased"]


async def test_with_postgres_away_renewals_go_on_the_log(settings: Settings, db: asyncpg.Pool) -> None:
    await store_token(db, AGENT_TOKEN, Principal("agent", "tenant-a", "i-web1"))
    await seed_havip(db, "havip-1")
    await attach_in_db(db, "havip-1", "i-web1")
    proxy, proxied = TcpProxy.before(settings.database_url)
    await proxy.restore()
    agent = bearer(AGENT_TOKEN)
    quick = {"database_url": proxied, "database_timeout_seconds": 1.0}
    async with running_gateway(settings.model_copy(update=quick)) as gateway:
        assert (await gateway.post("/v1/vrrp-events", json=claim(1), headers=agent)).status_code == 202
        await proxy.cut()
        answer = await gateway.post("/v1/vrrp-events", json=claim(2), headers=agent)
        assert answer.status_code == 202, answer.text
        await proxy.restore()
    logged = await read_topic(settings, topics.VRRP, until=2, timeout=5)
    assert [r.seq for r in logged if isinstance(r, VrrpReported)] == [1, 2]
    assert await db.fetchval("SELECT count(*) FROM claim_renewals") == 0
