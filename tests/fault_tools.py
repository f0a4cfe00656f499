"""What the fault tests share: watching readiness, reporting like an agent that retries, comparing stores."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import asyncpg
import httpx

from services.dev.processes import ServiceProcess
from services.dev.stack import DevStack
from services.readmodel.mappings import load_mappings


@contextlib.contextmanager
def healing(stack: DevStack) -> Iterator[threading.Lock]:
    """What `havip dev up` does about once a second: start again whatever died.

    Yields a lock: while a test holds it nothing is started again (e.g. while it puts back
    an older copy of the database under a cluster it killed).
    """
    stop = threading.Event()
    paused = threading.Lock()

    def loop() -> None:
        while not stop.wait(0.5):
            with paused:
                stack.heal()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield paused
    finally:
        stop.set()
        thread.join()


class ReadinessLog:
    """Every /readyz answer of some services, polled in the background, so a test can ask what was seen."""

    def __init__(self, services: Iterable[ServiceProcess], every: float = 0.2) -> None:
        self._services = list(services)
        self._every = every
        self.seen: dict[str, list[tuple[float, int | None, str]]] = defaultdict(list)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReadinessLog]:
        task = asyncio.create_task(self._poll())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                for service in self._services:
                    try:
                        answer = await client.get(f"{service.url}/readyz")
                        self.seen[service.service].append((time.monotonic(), answer.status_code, answer.text))
                    except httpx.HTTPError as exc:  # restarting: nothing listens for a moment
                        self.seen[service.service].append((time.monotonic(), None, repr(exc)))
                await asyncio.sleep(self._every)

    def unready_reasons(self, service: str, since: float = 0.0) -> list[str]:
        return [text for at, status, text in self.seen[service] if at >= since and status != 200]


async def all_ready(services: Iterable[ServiceProcess], timeout: float) -> float:
    """Seconds until every service answers /readyz 200 (and none has exited)."""
    started = time.monotonic()
    pending = list(services)
    last: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=2) as client:
        while pending:
            for service in list(pending):
                assert service.process is not None and service.process.poll() is None, service.tail()
                try:
                    answer = await client.get(f"{service.url}/readyz")
                except httpx.HTTPError as exc:
                    last[service.name] = repr(exc)
                    continue
                last[service.name] = answer.text
                if answer.status_code == 200:
                    pending.remove(service)
            if pending:
                assert time.monotonic() - started < timeout, [(s.name, last.get(s.name), s.tail(10)) for s in pending]
                await asyncio.sleep(0.2)
    return time.monotonic() - started


async def report_until_accepted(
    gateway: httpx.AsyncClient, agent_token: str, report: dict[str, Any], timeout: float = 60.0
) -> None:
    """Like the agent: a 503 (broker or database away) is retried, anything else but 202 is a failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = await gateway.post(
                "/v1/vrrp-events", json=report, headers={"Authorization": f"Bearer {agent_token}"}
            )
            if answer.status_code == 202:
                return
            assert answer.status_code in (429, 503), answer.text
        except httpx.TransportError:
            pass  # the gateway is restarting
        assert time.monotonic() < deadline, f"report {report} not accepted in {timeout}s"
        await asyncio.sleep(0.2)


async def forwarder_disagreements(db: asyncpg.Pool, forwarder_url: str) -> list[str]:
    """Every HAVIP whose forwarder answer (owner, version) differs from PostgreSQL; empty when they agree."""
    differences = []
    async with httpx.AsyncClient(timeout=5) as client:
        for mapping in await load_mappings(db):
            if mapping.status.value == "Deleted":
                continue
            answer = await client.get(
                f"{forwarder_url}/v1/routes", params={"vpc_id": mapping.vpc_id, "ip": mapping.ip_address}
            )
            if answer.status_code != 200:
                differences.append(f"{mapping.havip_id}: forwarder {answer.status_code}")
                continue
            route = answer.json()
            owner = mapping.owner.instance_id if mapping.owner else None
            if (route["instance_id"], route["version"]) != (owner, mapping.version):
                differences.append(
                    f"{mapping.havip_id}: forwarder {route['instance_id']} v{route['version']},"
                    f" postgres {owner} v{mapping.version}"
                )
    return differences


async def forwarder_agrees(db: asyncpg.Pool, forwarder_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while differences := await forwarder_disagreements(db, forwarder_url):
        assert time.monotonic() < deadline, differences
        await asyncio.sleep(0.2)
