"""No frozen failovers: the mapping worker SIGKILLed in a loop while failovers stream in.

Failovers alternate the MASTER between two attached instances of each HAVIP, a round
every 0.25 s. The mapping worker is SIGKILLed three times, started again at once each
time; then a standby joins and either worker is SIGKILLed twice more (and started
again). After each kill the forwarder must answer, within FOLLOW_BOUND_SECONDS
(15 s) of the kill, every HAVIP's owner from a failover published after the kill.
Measured on a 2-core machine (`havip bench rebalance`, medians): 3.3 s for a standby to
take over, 3.7 s for a lone worker started again at once; the bound leaves room for a
loaded CI runner and a worker that is slow to start.
At the end, with the stream stopped, PostgreSQL's owners are the last reports' and
the forwarder answers what PostgreSQL holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from schemas import topics
from schemas.messages import VrrpState
from services.dev.processes import ServiceProcess
from services.readmodel.mappings import load_mappings
from services.runtime.settings import Settings
from tests.inventory_tools import Publisher
from tests.mapping_tools import build_havips, member, report, route

pytestmark = pytest.mark.integration

FOLLOW_BOUND_SECONDS = 15.0
HAVIPS, PER_HAVIP = 6, 2
ROUND_SECONDS = 0.25


def version_after(round_: int) -> int:
    """A HAVIP's version once failover round `round_` is applied: create, two attaches and the
    first MASTER make 4; every later round releases the old owner and elects the new one."""
    return 4 + 2 * round_


class FailoverStream:
    """Round r: on every HAVIP the owner reports BACKUP and the other instance MASTER (seq r + 1)."""

    def __init__(self, settings: Settings) -> None:
        self._publish = Publisher(settings)
        self._stopping = asyncio.Event()
        self.rounds = 0  # rounds published so far, all of each
        self.last_owner: dict[str, str] = {}

    def stop(self) -> None:
        """Stop after the round being published."""
        self._stopping.set()

    async def run(self) -> None:
        async with self._publish:
            while not self._stopping.is_set():
                r = self.rounds
                for h in range(HAVIPS):
                    havip = f"havip-{h}"
                    new, old = member(h, r % PER_HAVIP, PER_HAVIP), member(h, (r + 1) % PER_HAVIP, PER_HAVIP)
                    await self._publish.send(topics.VRRP, havip, report(havip, old, VrrpState.BACKUP, seq=r + 1))
                    await self._publish.send(topics.VRRP, havip, report(havip, new, VrrpState.MASTER, seq=r + 1))
                    self.last_owner[havip] = new
                self.rounds = r + 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), ROUND_SECONDS)


async def forwarder_follows(forwarder: httpx.AsyncClient, addresses: dict[str, str], round_: int) -> None:
    """Until the forwarder answers every HAVIP at the version of `round_` or later."""
    while True:
        versions = [(await route(forwarder, ip))[1] for ip in addresses.values()]
        if min(versions) >= version_after(round_):
            return
        await asyncio.sleep(0.05)


async def kill_and_follow(
    victim: ServiceProcess, stream: FailoverStream, forwarder: httpx.AsyncClient, addresses: dict[str, str]
) -> float:
    """SIGKILL the victim, start it again at once; seconds until the forwarder follows the next round."""
    killed = time.monotonic()
    victim.kill()
    first_after = stream.rounds + 1  # the round being published may have started before the kill
    victim.start()
    await asyncio.wait_for(forwarder_follows(forwarder, addresses, first_after), FOLLOW_BOUND_SECONDS)
    return time.monotonic() - killed


async def test_the_forwarder_follows_failovers_while_mapping_workers_are_killed(
    settings: Settings,
    db: asyncpg.Pool,
    start_service: Callable[..., ServiceProcess],
) -> None:
    quota = start_service("quota")
    mapping = start_service("mapping")
    forwarder = start_service("forwarder")
    async with Publisher(settings) as publish:
        await build_havips(publish, settings, HAVIPS, PER_HAVIP)
    quota.stop()  # not needed from here on; the CPU is
    addresses = {m.havip_id: m.ip_address for m in await load_mappings(db)}
    stream = FailoverStream(settings)
    streaming = asyncio.get_running_loop().create_task(stream.run())
    followed: list[float] = []
    async with httpx.AsyncClient(base_url=forwarder.url, timeout=5) as client:
        try:
            await forwarder_follows(client, addresses, 1)
            for _ in range(3):  # one worker, restarted at once after each kill
                followed.append(await kill_and_follow(mapping, stream, client, addresses))
                await asyncio.to_thread(mapping.wait_ready)
            workers = [mapping, start_service("mapping")]  # a standby joins
            for k in range(2):
                followed.append(await kill_and_follow(workers[k % 2], stream, client, addresses))
                for worker in workers:
                    await asyncio.to_thread(worker.wait_ready)
        finally:
            stream.stop()
            await streaming
        print(f"\nforwarder followed {', '.join(f'{s:.1f}' for s in followed)} s after each kill")

        # Quiescence: every member's last report is in PostgreSQL, and it decided the owner.
        last = stream.rounds
        deadline = time.monotonic() + 60
        while await db.fetchval("SELECT count(*) FROM vrrp_reports WHERE seq = $1", last) < HAVIPS * PER_HAVIP:
            assert time.monotonic() < deadline, "mapping never caught up with the last failover"
            await asyncio.sleep(0.2)
        in_db = {m.havip_id: m for m in await load_mappings(db)}
        assert {h: m.owner.instance_id if m.owner else None for h, m in in_db.items()} == stream.last_owner
        expected = {h: (m.owner.instance_id if m.owner else None, m.version) for h, m in in_db.items()}
        deadline = time.monotonic() + 30
        while (answers := {h: await route(client, m.ip_address) for h, m in in_db.items()}) != expected:
            assert time.monotonic() < deadline, (answers, expected)
            await asyncio.sleep(0.2)
