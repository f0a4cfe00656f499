"""A database that forgets: PostgreSQL comes back without commits it had acknowledged.

A crash with fsync off, a failover to an asynchronous replica and a restore from a backup
all do this. The rest of the system is then ahead of the database: forwarders hold versions
it no longer has, and Kafka's committed offsets point past the reports whose effects it lost.

A stack of its own carries agents flipping the MASTER of three HAVIPs and a tenant creating,
attaching, detaching and deleting HAVIPs. A copy of the database is taken (pg_basebackup),
the work goes on for a few seconds, then the postmaster is killed and the copy put back in
its place. Then, bounded in time:
- the owners are the last MASTER each agent had accepted, including those the database lost
  (the reports are read again from the log);
- the forwarder answers exactly what PostgreSQL holds, versions included;
- failovers after the fault are followed;
- every operation the database still knows ended, those it forgot answer 404, none is
  Pending; quota's ledger equals the mapping tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import httpx
import pytest

from services.dev.stack import DEMO_TENANT_TOKEN
from tests.e2e.test_chaos import (
    SETTLE_SECONDS,
    Agents,
    Tenant,
    eventually_equal,
    havips_to_flip,
    healed_stack,
    ledger_differences,
    owners,
)
from tests.fault_tools import forwarder_agrees
from tests.pipeline_tools import bearer

pytestmark = pytest.mark.e2e


async def operation_status(gateway: httpx.AsyncClient, operation_id: str) -> str:
    """Its status once it is not Pending, or "unknown" when the gateway answers 404."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            answer = await gateway.get(
                f"/v1/operations/{operation_id}", params={"wait": "2s"}, headers=bearer(DEMO_TENANT_TOKEN)
            )
            if answer.status_code == 404:
                return "unknown"
            if answer.status_code == 200 and answer.json()["status"] != "Pending":
                return str(answer.json()["status"])
            assert answer.status_code in (200, 429, 503), answer.text
        await asyncio.sleep(0.2)
    raise AssertionError(f"operation {operation_id} still Pending after {SETTLE_SECONDS}s")


async def test_a_database_that_lost_acknowledged_commits_is_caught_up_with(workdir: Path) -> None:
    async with healed_stack(workdir, "forgets") as (stack, paused, db):
        postgres = stack._postgres
        assert postgres is not None
        async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as gateway:
            tenant = Tenant(gateway)
            flipped = await havips_to_flip(tenant)
            agents = Agents(gateway, flipped)
            stop = asyncio.Event()
            work = [asyncio.create_task(agents.run(stop)), asyncio.create_task(tenant.run(stop))]
            await asyncio.sleep(3)
            await asyncio.to_thread(postgres.backup, postgres.root / "copy")
            known_at_copy = len(tenant.operations)
            await asyncio.sleep(4)  # what the copy will not have
            stop.set()
            await asyncio.gather(*work)
            await forwarder_agrees(db, stack.url("forwarder"), timeout=SETTLE_SECONDS)
            operations_before = await db.fetchval("SELECT count(*) FROM operations")

            with paused:  # nothing starts the old cluster again meanwhile
                process = postgres._process
                assert process is not None
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait)
                postgres.restore(postgres.root / "copy")
                await asyncio.to_thread(postgres.start)
            returned = time.monotonic()
            print(f"\nthe database is back from a copy ({known_at_copy} operations known then)", flush=True)
            forgotten = operations_before - await db.fetchval("SELECT count(*) FROM operations")
            assert forgotten > 0, "the copy held everything: the database forgot nothing"

            await eventually_equal("owners after the database forgot", lambda: owners(db, flipped), agents.owner)
            await forwarder_agrees(db, stack.url("forwarder"), timeout=SETTLE_SECONDS)
            print(
                f"forwarder equal to PostgreSQL {time.monotonic() - returned:.1f} s after the database returned"
                f" ({forgotten} operations forgotten)",
                flush=True,
            )

            for havip_id in flipped:  # failovers after the fault are followed
                await agents.flip(havip_id)
            await eventually_equal("owners after more failovers", lambda: owners(db, flipped), agents.owner)
            await forwarder_agrees(db, stack.url("forwarder"), timeout=SETTLE_SECONDS)

            statuses = [await operation_status(gateway, op) for op in tenant.operations]
            assert set(statuses[:known_at_copy]) <= {"Succeeded", "Failed"}, statuses[:known_at_copy]
            assert set(statuses) <= {"Succeeded", "Failed", "unknown"}, statuses
            assert await db.fetchval("SELECT count(*) FROM operations WHERE status = 'Pending'") == 0

            await eventually_equal("quota's ledger and the mapping tables", lambda: ledger_differences(db), {})
