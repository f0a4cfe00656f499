"""`havip bench recovery`: how the stack behaves through its faults, measured on this machine.

On a stack of its own (embedded broker and PostgreSQL unless the environment names
others), in one run, `rounds` times each:

- gateway SIGKILLed and started again: time until it accepts a VRRP report (202),
  and until /readyz answers 200;
- PostgreSQL killed, then started again once every service said so: per service, the
  time until /readyz turned 503, and until it was 200 again after the restart;
- PostgreSQL frozen (SIGSTOP to the postmaster and every backend: connections open, nothing
  answered), then thawed: the same two times per service;
- PostgreSQL forgetting: a copy taken (pg_basebackup), a failover, the postmaster killed
  and the copy put back, so the database has lost the failover the forwarder shows: time
  from its start until the forwarder answers what PostgreSQL holds (owner and version)
  and that owner is the one the agents reported last;
- broker frozen (SIGSTOP: it accepts connections and answers nothing), then thawed:
  the same two times per service;
- broker killed, then started again empty (the embedded broker keeps topics in memory)
  once every service said so: the same two times per service, then the time until a
  failover reported after that reaches the forwarder.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from services.dev.bench_harness import bench_stack
from services.dev.benchkit import format_table, write_json
from services.dev.processes import ServiceProcess
from services.dev.stack import DEMO_TENANT_TOKEN, DevStack, demo_agent_tokens
from services.dev.walkthrough import Tenant, WalkthroughError
from services.runtime.settings import Settings

Figures = dict[str, list[float]]

# What has not happened by then is recorded as never (inf), and the run goes on.
LIMIT_SECONDS = 90.0


def run_recovery_bench(settings: Settings, rounds: int, out_dir: Path) -> int:
    with bench_stack(settings) as stack:
        figures = asyncio.run(_bench(stack, rounds))
    rows = [
        [name, len(samples), statistics.median(samples), min(samples), max(samples)]
        for name, samples in figures.items()
    ]
    print("\n" + format_table(["figure", "runs", "median s", "min s", "max s"], rows))
    path = write_json(out_dir, recovery_results(rounds, figures))
    print(f"\nwrote {path}")
    return 0


def recovery_results(rounds: int, figures: Figures) -> dict[str, Any]:
    """What results.json holds: each figure's seconds, null where it did not happen within the limit."""
    return {
        "rounds": rounds,
        "limit_seconds": LIMIT_SECONDS,
        "seconds": {name: [None if math.isinf(s) else s for s in samples] for name, samples in figures.items()},
    }


async def _bench(stack: DevStack, rounds: int) -> Figures:
    figures: Figures = defaultdict(list)
    async with (
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=10) as gateway,
        httpx.AsyncClient(base_url=stack.url("forwarder"), timeout=10) as forwarder,
    ):
        tenant = Tenant(gateway, forwarder, DEMO_TENANT_TOKEN, demo_agent_tokens())
        havip = await tenant.create_havip("vsw-demo-a", name="bench-recovery")
        for instance in ("i-demo-web1", "i-demo-web2"):
            await tenant.attach(havip["havip_id"], instance)
        failover = _Failover(tenant, havip["havip_id"], havip["ip_address"])
        await failover.next()
        for number in range(1, rounds + 1):
            print(f"round {number}/{rounds}", flush=True)
            await _gateway_restart(stack, failover, figures)
            await _postgres_outage(stack, figures)
            await _postgres_freeze(stack, figures)
            await _broker_freeze(stack, figures)
            await _broker_loss(stack, failover, figures)
        # Last: a stack that never catches up with a database that forgot (as before this
        # was built) follows no failover after it, and would spoil every figure after it.
        for number in range(1, rounds + 1):
            print(f"the database forgets, {number}/{rounds}", flush=True)
            await _postgres_forgets(stack, failover, figures)
    return figures


class _Failover:
    """Moves the HAVIP to the other instance, retrying reports the way an agent does."""

    def __init__(self, tenant: Tenant, havip_id: str, ip: str) -> None:
        self._tenant = tenant
        self.havip_id = havip_id
        self.ip = ip
        self.owner = "i-demo-web2"

    async def report_accepted(self, instance: str, state: str) -> None:
        while True:
            try:
                await self._tenant.report(self.havip_id, instance, state)
                return
            except Exception:  # 503 or no gateway yet: what an agent retries
                await asyncio.sleep(0.05)

    async def next(self, timeout: float = 120.0) -> None:
        new = "i-demo-web1" if self.owner == "i-demo-web2" else "i-demo-web2"
        await self.report_accepted(self.owner, "BACKUP")
        await self.report_accepted(new, "MASTER")
        await self._tenant.wait_owner("vpc-demo", self.ip, new, timeout=timeout)
        self.owner = new


async def _timed(started: float, work: Awaitable[object]) -> float:
    """Seconds from `started` until `work` is done; infinity if it is not done within LIMIT_SECONDS."""
    try:
        await asyncio.wait_for(work, LIMIT_SECONDS)
    except (TimeoutError, WalkthroughError):
        return math.inf
    return time.monotonic() - started


async def _gateway_restart(stack: DevStack, failover: _Failover, figures: Figures) -> None:
    gateway = next(s for s in stack.services if s.service == "gateway")
    gateway.kill()
    started = time.monotonic()
    gateway.start()
    figures["gateway restart: a report accepted"].append(
        await _timed(started, failover.report_accepted(failover.owner, "MASTER"))
    )
    figures["gateway restart: ready"].append(await _timed(started, _until_ready([gateway])))


async def _postgres_outage(stack: DevStack, figures: Figures) -> None:
    postgres = stack._postgres
    if postgres is None:
        return  # not ours to stop
    await _outage(
        stack.services,
        "PostgreSQL",
        figures,
        cut=lambda: _signal(postgres._process, signal.SIGKILL),
        restore=lambda: asyncio.to_thread(postgres.start),
    )


async def _postgres_freeze(stack: DevStack, figures: Figures) -> None:
    postgres = stack._postgres
    if postgres is not None:
        await _freeze(stack, "PostgreSQL frozen", lambda: postgres._process, figures)


async def _freeze(
    stack: DevStack, what: str, process: Callable[[], subprocess.Popen[bytes] | None], figures: Figures
) -> None:
    """SIGSTOP to a process and all under it (connections stay open, nothing answers), then SIGCONT."""
    await _outage(
        stack.services,
        what,
        figures,
        cut=lambda: _signal_tree(process(), signal.SIGSTOP),
        restore=lambda: _signal_tree(process(), signal.SIGCONT),
    )


async def _postgres_forgets(stack: DevStack, failover: _Failover, figures: Figures) -> None:
    postgres = stack._postgres
    if postgres is None:
        return
    name = "PostgreSQL forgot a failover: forwarder equal to it again"
    if math.inf in figures[name]:
        figures[name].append(math.inf)  # it never caught up with the last one: nothing follows
        return
    await _until_ready(stack.services)
    copy = postgres.root / "bench-copy"
    shutil.rmtree(copy, ignore_errors=True)
    await asyncio.to_thread(postgres.backup, copy)
    await failover.next()  # what the copy does not have, and the forwarder shows
    await _signal(postgres._process, signal.SIGKILL)
    postgres.restore(copy)
    await asyncio.to_thread(postgres.start)
    started = time.monotonic()
    pool = await asyncpg.create_pool(stack.settings.database_url, min_size=1, max_size=2)
    try:
        figures[name].append(await _timed(started, _forwarder_matches(stack, pool, failover)))
    finally:
        await pool.close()


async def _forwarder_matches(stack: DevStack, pool: asyncpg.Pool, failover: _Failover) -> None:
    """Until the forwarder answers the owner and version PostgreSQL holds, and it is the agents' last MASTER."""
    async with httpx.AsyncClient(base_url=stack.url("forwarder"), timeout=2) as forwarder:
        while True:
            with contextlib.suppress(httpx.HTTPError, OSError, asyncpg.PostgresError):
                row = await pool.fetchrow(
                    "SELECT a.instance_id, h.version FROM havips h JOIN attachments a"
                    " ON (a.havip_id, a.target_id) = (h.havip_id, h.owner_target_id) WHERE h.havip_id = $1",
                    failover.havip_id,
                )
                answer = await forwarder.get("/v1/routes", params={"vpc_id": "vpc-demo", "ip": failover.ip})
                if row is not None and answer.status_code == 200:
                    route = answer.json()
                    if (
                        (route["instance_id"], route["version"])
                        == (failover.owner, row["version"])
                        == (
                            row["instance_id"],
                            row["version"],
                        )
                    ):
                        return
            await asyncio.sleep(0.05)


async def _broker_freeze(stack: DevStack, figures: Figures) -> None:
    broker = stack._broker
    if broker is not None:
        await _freeze(stack, "broker frozen", lambda: broker._process, figures)


async def _broker_loss(stack: DevStack, failover: _Failover, figures: Figures) -> None:
    broker = stack._broker
    if broker is None:
        return
    await _outage(
        stack.services,
        "broker killed",
        figures,
        cut=lambda: _signal(broker._process, signal.SIGKILL),
        # Empty, on the same port, topics and inventory seeded; "ready again" includes the
        # services' recovery from the lost topics.
        restore=lambda: asyncio.to_thread(stack._restart_broker),
    )
    started = time.monotonic()
    figures["broker killed: then a failover reaches the forwarder"].append(
        await _timed(started, failover.next(timeout=LIMIT_SECONDS))
    )


async def _outage(
    services: list[ServiceProcess],
    what: str,
    figures: Figures,
    cut: Callable[[], Awaitable[None]],
    restore: Callable[[], Awaitable[object]],
) -> None:
    await _until_ready(services)
    await cut()
    cut_at = time.monotonic()
    unready = await _first(services, ready=False)
    await restore()
    restored_at = time.monotonic()
    ready = await _first(services, ready=True)
    for service in services:
        figures[f"{what}: {service.name} unready after"].append(unready[service.name] - cut_at)
        figures[f"{what}: {service.name} ready again after"].append(ready[service.name] - restored_at)


async def _first(services: list[ServiceProcess], *, ready: bool, timeout: float = LIMIT_SECONDS) -> dict[str, float]:
    """When each service first answered /readyz as asked (ready: 200, else anything but 200); never: infinity."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while len(seen) < len(services):  # keyed by name: a standby worker counts on its own
            for service in services:
                if service.name in seen:
                    continue
                try:
                    status = (await client.get(f"{service.url}/readyz")).status_code
                except httpx.HTTPError:
                    status = None
                if (status == 200) == ready:
                    seen[service.name] = time.monotonic()
            if time.monotonic() > deadline:
                return {s.name: seen.get(s.name, math.inf) for s in services}
            await asyncio.sleep(0.05)
    return seen


async def _until_ready(services: list[ServiceProcess]) -> None:
    if math.inf in (await _first(services, ready=True)).values():
        raise TimeoutError("not ready")


async def _signal_tree(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """To the process and every process under it: PostgreSQL's backends each lead a process
    group of their own, so stopping the postmaster's group would leave them answering."""
    assert process is not None
    root = psutil.Process(process.pid)
    for each in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            each.send_signal(sig)


async def _signal(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    assert process is not None
    process.send_signal(sig)
    if sig == signal.SIGKILL:
        await asyncio.to_thread(process.wait)
