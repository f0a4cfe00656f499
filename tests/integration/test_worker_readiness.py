"""Readiness tells the truth about PostgreSQL: a stream worker whose database is away says so.

The database sits behind a TCP proxy the test cuts, as a stopped server would be; the
worker's /readyz must turn 503 (naming the database) within a short grace, and 200
again once the database is back, without a restart.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from services.runtime.settings import Settings
from tests.net_tools import TcpProxy

pytestmark = pytest.mark.integration


async def readiness(url: str) -> tuple[int, dict[str, object]]:
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


@pytest.mark.parametrize("service", ["quota", "mapping"])
async def test_a_worker_is_unready_while_postgres_is_away_and_ready_again_after(
    settings: Settings,
    start_service,
    service: str,  # type: ignore[no-untyped-def]
) -> None:
    address = urlsplit(settings.database_url)
    assert address.hostname is not None and address.port is not None
    proxy = TcpProxy(address.hostname, address.port)
    await proxy.restore()
    proxied = urlunsplit(address._replace(netloc=f"{address.username}@127.0.0.1:{proxy.port}"))
    worker = await asyncio.to_thread(start_service, service, database_url=proxied)
    assert (await readiness(worker.url))[0] == 200

    await proxy.cut()
    went_unready = await until(worker.url, 503)
    status, body = await readiness(worker.url)
    assert "database" in body["reasons"], body  # type: ignore[operator]
    await proxy.restore()
    came_back = await until(worker.url, 200)
    print(f"\n{service}: unready {went_unready:.1f} s after the cut, ready {came_back:.1f} s after the restore")
    assert worker.process is not None and worker.process.poll() is None  # recovered by itself
