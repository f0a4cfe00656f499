"""A broker that comes back without its topics: every service notices, and nothing committed is lost.

The embedded broker keeps everything in memory, so killing it and starting it
again on the same port is exactly "a cluster rebuilt under a running system".
This test runs its own broker (the session's is shared by other tests) and the
four services as processes. In flight when the broker dies: a create whose
command is on the broker but not yet decided (quota is frozen with SIGSTOP),
and a failover reported once the broker is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from schemas import topics
from services.dev.embedded import EmbeddedBroker
from services.dev.processes import ServiceProcess
from services.dev.stack import DEMO_TENANT_TOKEN, demo_agent_tokens, restart_embedded_broker, seed
from services.dev.walkthrough import Tenant
from services.runtime.db import connect_pool
from services.runtime.kafka import ensure_topics, topic_name
from services.runtime.settings import Settings
from tests.conftest import Infra, fresh_settings
from tests.fault_tools import ReadinessLog, all_ready, forwarder_agrees, report_until_accepted
from tests.pipeline_tools import SERVICES, bearer, settled_operation

pytestmark = pytest.mark.integration


async def mapped_havips(settings: Settings) -> set[str]:
    """The HAVIPs whose state havip.mappings holds, read from the start of the topic."""
    consumer = AIOKafkaConsumer(
        topic_name(settings, topics.MAPPINGS), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: set[str] = set()
    try:
        while batch := await consumer.getmany(timeout_ms=1500):
            found |= {record.key.decode() for records in batch.values() for record in records if record.key}
    finally:
        await consumer.stop()
    return found


async def test_a_broker_that_lost_its_topics_is_noticed_and_recovered_from(infra: Infra, workdir: Path) -> None:
    broker = EmbeddedBroker(Path(workdir))
    broker.start()
    logs = Path(workdir) / f"broker-loss-{broker.port}"
    logs.mkdir()
    services: dict[str, ServiceProcess] = {}
    try:
        settings = (await fresh_settings(infra)).model_copy(update={"kafka_bootstrap": broker.bootstrap})
        await seed(settings)
        services = {name: ServiceProcess(name, settings, logs).start() for name in SERVICES}
        await all_ready(services.values(), timeout=90)
        db = await connect_pool(settings.database_url)
        async with (
            httpx.AsyncClient(base_url=services["gateway"].url, timeout=15) as gateway,
            httpx.AsyncClient(base_url=services["forwarder"].url, timeout=5) as forwarder,
        ):
            tenant = Tenant(gateway, forwarder, DEMO_TENANT_TOKEN, demo_agent_tokens())
            havip = await tenant.create_havip("vsw-demo-a")
            for instance in ("i-demo-web1", "i-demo-web2"):
                assert (await tenant.attach(havip["havip_id"], instance))["status"] == "Succeeded"
            await tenant.report(havip["havip_id"], "i-demo-web1", "MASTER")
            await tenant.wait_owner("vpc-demo", havip["ip_address"], "i-demo-web1")

            # A command on the broker that nobody has decided yet.
            quota = services["quota"].process
            assert quota is not None
            os.kill(quota.pid, signal.SIGSTOP)
            answer = await gateway.post(
                "/v1/havips", json={"vswitch_id": "vsw-demo-a"}, headers=bearer(DEMO_TENANT_TOKEN)
            )
            assert answer.status_code == 202, answer.text
            in_flight = answer.json()["operation"]["operation_id"]

            async with ReadinessLog(services.values()).running() as readiness:
                assert broker._process is not None
                broker._process.kill()
                broker._process.wait()
                lost_at = time.monotonic()
                await asyncio.sleep(4)  # long enough for every service to notice
                # Empty, on the same port, as `havip dev up` starts it again (topics made afresh).
                await asyncio.to_thread(restart_embedded_broker, broker, settings)
                os.kill(quota.pid, signal.SIGCONT)

                # Once it can be published, the failover goes through like any other.
                agents = demo_agent_tokens()
                for instance, state in (("i-demo-web1", "BACKUP"), ("i-demo-web2", "MASTER")):
                    report = {"havip_id": havip["havip_id"], "state": state, "priority": 100, "seq": 10}
                    await report_until_accepted(gateway, agents[instance], report)
                recovered_in = await all_ready(services.values(), timeout=90)
                await tenant.wait_owner("vpc-demo", havip["ip_address"], "i-demo-web2", timeout=60)

            for name in SERVICES:
                reasons = readiness.unready_reasons(name, since=lost_at)
                assert reasons, f"{name} stayed ready while the broker was away"
            operation = await settled_operation(gateway, DEMO_TENANT_TOKEN, in_flight)
            assert operation["status"] == "Succeeded", operation
            await forwarder_agrees(db, services["forwarder"].url, timeout=30)
            owner = await db.fetchval("SELECT owner_target_id FROM havips WHERE havip_id = $1", havip["havip_id"])
            assert owner == "i-demo-web2"
            # Every HAVIP's state is on the new topic again, for whoever starts from it.
            created = operation["havip_id"]
            assert {havip["havip_id"], created} <= await mapped_havips(settings)
            # Nothing was restarted from outside: each process recovered by itself (a worker restarts in place).
            assert all(s.process is not None and s.process.poll() is None for s in services.values())

            # `havip topics` on a live stack changes nothing.
            assert await ensure_topics(settings) == []
            await all_ready(services.values(), timeout=10)
            print(f"\nall four services ready {recovered_in:.1f} s after the broker came back")
        await db.close()
    finally:
        for service in services.values():
            if service.process is not None:
                os.kill(service.process.pid, signal.SIGCONT) if service.process.poll() is None else None
            service.stop()
        broker.stop()
