"""Readiness tells the truth about each dependency: a service whose database or broker is away says so,
and a stream worker not yet caught up with its partitions says so.

The database sits behind a TCP proxy the test cuts, as a stopped server would be; the
service's /readyz must turn 503 (naming the database) within a short grace, and 200
again once the database is back, without a restart. The broker is frozen with SIGSTOP
(it accepts connections and answers nothing, the worst kind of broken); it is a broker
of this test's own, since the session's is shared.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from schemas import topics
from services.dev.bench_renewals import renewal, seed_live_masters
from services.dev.embedded import EmbeddedBroker
from services.dev.processes import ServiceProcess
from services.runtime.kafka import ensure_topics, new_producer, topic_name
from services.runtime.settings import Settings
from tests.conftest import Infra, fresh_settings
from tests.fault_tools import all_ready
from tests.net_tools import TcpProxy
from tests.pipeline_tools import SERVICES

pytestmark = pytest.mark.integration


async def readiness(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(f"{url}/readyz")
    return answer.status_code, answer.json()


async def until(url: str, status: int, timeout: float = 30.0) -> float:
    """Seconds until /readyz answers `status`."""
    started = time.monotonic()
    while (await readiness(url))[0] != status:
        assert time.monotonic() - started < timeout, await readiness(url)
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.parametrize("fault", ["cut", "frozen"])
@pytest.mark.parametrize("service", ["quota", "mapping", "forwarder", "gateway"])
async def test_a_service_is_unready_while_postgres_is_away_and_ready_again_after(
    settings: Settings,
    start_service: Callable[..., ServiceProcess],
    service: str,
    fault: str,
) -> None:
    proxy, proxied = TcpProxy.before(settings.database_url)
    await proxy.restore()
    worker = await asyncio.to_thread(start_service, service, database_url=proxied)
    assert (await readiness(worker.url))[0] == 200

    if fault == "cut":  # a server stopped: connections refused and dropped
        await proxy.cut()
    else:  # a server hung: connections open, nothing answered
        proxy.freeze()
    went_unready = await until(worker.url, 503)
    status, body = await readiness(worker.url)
    assert "database" in body["reasons"], body
    await asyncio.sleep(3)  # long enough for any other check to fail on the database's account
    status, body = await readiness(worker.url)
    # Only the database is named: the broker is fine, whatever the checks that also write to PostgreSQL.
    assert status == 503 and not [r for r in body["reasons"] if "database" not in r], body
    if fault == "cut":
        await proxy.restore()
    else:
        proxy.thaw()
    came_back = await until(worker.url, 200)
    print(f"\n{service}: unready {went_unready:.1f} s after the {fault}, ready {came_back:.1f} s after it ended")
    assert worker.process is not None and worker.process.poll() is None  # recovered by itself
    # Stopped here, while this loop still runs the proxy its shutdown talks through.
    await asyncio.to_thread(worker.stop)


async def test_every_service_is_unready_while_the_broker_answers_nothing_and_ready_again_after(
    infra: Infra, workdir: Path
) -> None:
    broker = EmbeddedBroker(workdir)
    broker.start()
    services: list[ServiceProcess] = []
    try:
        settings = (await fresh_settings(infra)).model_copy(update={"kafka_bootstrap": broker.bootstrap})
        await ensure_topics(settings)
        logs = workdir / f"broker-readiness-{broker.port}"
        logs.mkdir()
        services = [ServiceProcess(name, settings, logs).start() for name in SERVICES]
        await all_ready(services, timeout=90)
        assert broker._process is not None
        broker._process.send_signal(signal.SIGSTOP)
        try:
            for service in services:
                went_unready = await until(service.url, 503)
                body = (await readiness(service.url))[1]
                assert "broker" in body["reasons"], body
                print(f"\n{service.service}: unready {went_unready:.1f} s after the broker froze (or the one before)")
        finally:
            broker._process.send_signal(signal.SIGCONT)
        came_back = await all_ready(services, timeout=60)
        print(f"all ready again {came_back:.1f} s after the broker thawed")
    finally:
        for service in services:
            service.stop()
        broker.stop()


async def test_a_mapping_worker_is_ready_only_once_it_applied_what_its_partitions_held(
    settings: Settings,
    db: asyncpg.Pool,
    start_service: Callable[..., ServiceProcess],
) -> None:
    havips, renewals = 40, 50
    await seed_live_masters(db, havips)
    producer = new_producer(settings)
    await producer.start()
    try:  # a backlog of renewals, queued before the worker starts
        topic = topic_name(settings, topics.VRRP)
        sent = [
            await producer.send(topic, key=f"havip-{h}".encode(), value=topics.encode(renewal(h, seq)))
            for seq in range(2, 2 + renewals)
            for h in range(havips)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    worker = await asyncio.to_thread(start_service, "mapping", wait=False)
    deadline = time.monotonic() + 90
    while True:
        try:
            if (await readiness(worker.url))[0] == 200:
                break
        except httpx.HTTPError:
            pass  # not listening yet
        assert time.monotonic() < deadline, worker.tail()
        await asyncio.sleep(0.05)
    # Ready means caught up: every renewal queued before it started is applied.
    owners = [f"i-{2 * h}" for h in range(havips)]
    assert await db.fetchval("SELECT min(seq) FROM vrrp_reports WHERE instance_id = ANY($1)", owners) == 1 + renewals
