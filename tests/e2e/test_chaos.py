"""Chaos: every part of the stack killed in turn while tenants and agents keep working.

A stack of its own (embedded broker and PostgreSQL, the four services as
processes, healed the way `havip dev up` heals them) carries two streams of
work: agents flipping the MASTER of three HAVIPs back and forth, and a tenant
creating, attaching, detaching and deleting HAVIPs, retrying with the same
Idempotency-Key whatever it is answered, as a real client does. Meanwhile
quota, mapping, the forwarder and the gateway are SIGKILLed one after the
other, then PostgreSQL, then the broker.

Then, bounded in time:
- every operation reached a terminal state, and the one it answered is what
  the tables hold (a HAVIP whose create and delete Succeeded is Deleted, one
  whose create Failed was never made);
- quota's ledger equals the mapping tables;
- PostgreSQL's owners are the last MASTER each agent had accepted (before the
  broker's loss exactly; after it, the agents' next claims, since reports in
  flight die with a broker's memory);
- the forwarder answers exactly what PostgreSQL holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.dev.embedded import free_port
from services.dev.stack import DEMO_TENANT_TOKEN, DevStack, demo_agent_tokens
from services.runtime.db import connect_pool
from services.runtime.settings import Settings
from tests.fault_tools import all_ready, forwarder_agrees, healing
from tests.integration.test_lifecycle_invariants import ledger_and_mapping
from tests.pipeline_tools import bearer

pytestmark = pytest.mark.e2e

FLIPPED = ("i-demo-web1", "i-demo-web2")
SETTLE_SECONDS = 90.0


@dataclass
class Agents:
    """Agents flipping the MASTER of some HAVIPs, in order, each report retried until accepted."""

    gateway: httpx.AsyncClient
    havips: list[str]
    owner: dict[str, str] = field(default_factory=dict)  # the last MASTER accepted, per HAVIP
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    accepted: int = 0
    refused: int = 0

    async def report(self, havip_id: str, instance_id: str, state: str) -> None:
        body = {"havip_id": havip_id, "state": state, "priority": 100, "seq": next(self.seq)}
        headers = bearer(demo_agent_tokens()[instance_id])
        while True:
            try:
                answer = await self.gateway.post("/v1/vrrp-events", json=body, headers=headers)
                if answer.status_code == 202:
                    self.accepted += 1
                    return
                assert answer.status_code in (429, 503), answer.text
            except httpx.TransportError:
                pass  # the gateway is being restarted
            self.refused += 1
            await asyncio.sleep(0.2)

    async def flip(self, havip_id: str) -> None:
        current = self.owner.get(havip_id, FLIPPED[1])
        new = FLIPPED[0] if current == FLIPPED[1] else FLIPPED[1]
        await self.report(havip_id, current, "BACKUP")
        await self.report(havip_id, new, "MASTER")
        self.owner[havip_id] = new

    async def run(self, stop: asyncio.Event) -> None:
        for havip_id in itertools.cycle(self.havips):
            if stop.is_set():
                return
            await self.flip(havip_id)
            await asyncio.sleep(0.1)


@dataclass
class Tenant:
    """Creates, attaches, detaches and deletes HAVIPs in a loop; every operation id is kept."""

    gateway: httpx.AsyncClient
    operations: list[str] = field(default_factory=list)
    # Per create: the HAVIP, whether its create and (later) its delete Succeeded.
    lifecycles: list[tuple[str, bool, bool]] = field(default_factory=list)
    retries: int = 0

    async def mutate(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One mutation, retried with the same Idempotency-Key until answered 202, then until it ends."""
        headers = {**bearer(DEMO_TENANT_TOKEN), "Idempotency-Key": str(uuid.uuid4())}
        while True:
            try:
                answer = await self.gateway.request(method, url, json=body, headers=headers)
                if answer.status_code == 202:
                    break
                assert answer.status_code in (429, 503), f"{method} {url}: {answer.status_code} {answer.text}"
            except httpx.TransportError:
                pass
            self.retries += 1
            await asyncio.sleep(0.3)
        accepted = answer.json()
        self.operations.append(accepted["operation"]["operation_id"])
        return {**accepted, "operation": await self.settled(accepted["operation"]["operation_id"])}

    async def settled(self, operation_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                answer = await self.gateway.get(
                    f"/v1/operations/{operation_id}", params={"wait": "2s"}, headers=bearer(DEMO_TENANT_TOKEN)
                )
                if answer.status_code == 200 and answer.json()["status"] != "Pending":
                    return dict(answer.json())
                assert answer.status_code in (200, 429, 503), answer.text
            await asyncio.sleep(0.2)
        raise AssertionError(f"operation {operation_id} still Pending after {SETTLE_SECONDS}s")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            created = await self.mutate("POST", "/v1/havips", {"vswitch_id": "vsw-demo-a"})
            havip_id = created["havip"]["havip_id"]
            if created["operation"]["status"] != "Succeeded":
                self.lifecycles.append((havip_id, False, False))
                continue
            havip = f"/v1/havips/{havip_id}"
            attached = await self.mutate("POST", f"{havip}/associations", {"instance_id": "i-demo-web3"})
            if attached["operation"]["status"] == "Succeeded":
                await self.mutate("DELETE", f"{havip}/associations/i-demo-web3")
            deleted = await self.mutate("DELETE", havip)
            self.lifecycles.append((havip_id, True, deleted["operation"]["status"] == "Succeeded"))


async def havips_to_flip(tenant: Tenant, count: int = 3) -> list[str]:
    """HAVIPs attached to both instances the agents flip between."""
    havips = []
    for _ in range(count):
        created = await tenant.mutate("POST", "/v1/havips", {"vswitch_id": "vsw-demo-a"})
        havip_id = created["havip"]["havip_id"]
        for instance in FLIPPED:
            await tenant.mutate("POST", f"/v1/havips/{havip_id}/associations", {"instance_id": instance})
        havips.append(havip_id)
    return havips


async def owners(db: asyncpg.Pool, havips: list[str]) -> dict[str, str | None]:
    rows = await db.fetch("SELECT havip_id, owner_target_id FROM havips WHERE havip_id = ANY($1)", havips)
    return {row["havip_id"]: row["owner_target_id"] for row in rows}


async def eventually_equal(what: str, actual: Any, expected: Any, timeout: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await actual()) != expected:
        assert time.monotonic() < deadline, f"{what}: {seen} != {expected}"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def healed_stack(workdir: Path, name: str) -> AsyncIterator[tuple[DevStack, threading.Lock, asyncpg.Pool]]:
    """A stack of its own, healed as `havip dev up` heals it (the lock pauses that), and a pool on its database."""
    ports = {f"{service}_port": free_port() for service in ("gateway", "forwarder", "quota", "mapping")}
    settings = Settings(**ports)  # type: ignore[arg-type]  # only the *_port fields, all ints
    stack = DevStack(settings, workdir / f"{name}-{ports['gateway_port']}", embedded_kafka=True, embedded_postgres=True)
    await asyncio.to_thread(stack.__enter__)  # it runs event loops of its own
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stack.stop)
        paused = cleanup.enter_context(healing(stack))
        db = await connect_pool(stack.settings.database_url, max_size=4)
        try:
            yield stack, paused, db
        finally:
            await db.close()


async def ledger_differences(db: asyncpg.Pool) -> dict[str, Any]:
    """Where quota's ledger and the mapping tables disagree: (only in quota's, only in mapping's)."""
    views = await ledger_and_mapping(db)
    return {name: (q - m, m - q) for name, (q, m) in views.items() if q != m}


async def test_the_stack_survives_every_part_of_it_killed_in_turn(workdir: Path) -> None:
    started = time.monotonic()
    async with healed_stack(workdir, "chaos") as (stack, _, db):
        services = {s.service: s for s in stack.services}
        async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as gateway:
            tenant = Tenant(gateway)
            flipped = await havips_to_flip(tenant)
            agents = Agents(gateway, flipped)
            stop = asyncio.Event()
            work = [asyncio.create_task(agents.run(stop)), asyncio.create_task(tenant.run(stop))]

            async def kill(name: str, pid_of: Any) -> None:
                await asyncio.sleep(2)  # work flows between faults
                pid_of().send_signal(signal.SIGKILL)
                print(f"\n{time.monotonic() - started:6.1f}s killed {name}", flush=True)
                await asyncio.sleep(2)  # heal notices the death and starts it again (1 s back-off)
                ready_in = await all_ready(stack.services, timeout=SETTLE_SECONDS)
                print(f"{time.monotonic() - started:6.1f}s all ready again ({ready_in:.1f} s)", flush=True)

            for name in ("quota", "mapping", "forwarder", "gateway"):
                await kill(name, lambda n=name: services[n].process)
            assert stack._postgres is not None
            await kill("postgres", lambda: stack._postgres._process)

            # Nothing the agents had accepted may be lost to a dead service or database.
            stop.set()
            await asyncio.gather(*work)
            await eventually_equal("owners after the service faults", lambda: owners(db, flipped), agents.owner)
            await forwarder_agrees(db, stack.url("forwarder"), timeout=SETTLE_SECONDS)

            # The broker: what it held in memory is gone, and the stack must notice and rebuild.
            stop = asyncio.Event()
            work = [asyncio.create_task(agents.run(stop)), asyncio.create_task(tenant.run(stop))]
            assert stack._broker is not None
            await kill("broker", lambda: stack._broker._process)
            await asyncio.sleep(2)
            stop.set()
            await asyncio.gather(*work)
            for havip_id in flipped:  # the agents' next claims
                await agents.flip(havip_id)

            await eventually_equal("owners after the broker's loss", lambda: owners(db, flipped), agents.owner)
            for operation_id in tenant.operations:
                assert (await tenant.settled(operation_id))["status"] in ("Succeeded", "Failed")
            assert await db.fetchval("SELECT count(*) FROM operations WHERE status = 'Pending'") == 0
            for havip_id, created_ok, deleted_ok in tenant.lifecycles:
                status = await db.fetchval("SELECT status FROM havips WHERE havip_id = $1", havip_id)
                expected = ("Deleted" if deleted_ok else "Available") if created_ok else None
                assert status == expected, (havip_id, created_ok, deleted_ok, status)

            await eventually_equal("quota's ledger and the mapping tables", lambda: ledger_differences(db), {})
            await forwarder_agrees(db, stack.url("forwarder"), timeout=SETTLE_SECONDS)
            print(
                f"{time.monotonic() - started:6.1f}s settled: {len(tenant.operations)} operations,"
                f" {agents.accepted} reports accepted, {agents.refused + tenant.retries} answers retried",
                flush=True,
            )
