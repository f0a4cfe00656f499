"""`havip bench rebalance`: how long a mapping worker's partitions stand still when it dies.

Per profile of consumer-group settings, each figure the median of several rounds:
- takeover: one of two running workers is SIGKILLed; until every partition is processed again;
- handover: the same with SIGTERM (the worker leaves its group as it stops);
- restart: the only worker is SIGKILLed and started again at once; until every partition is processed again;
- start: that restarted worker's time from its process start until every partition is processed;
- rejoin: with two workers, the killed one started again: the longest any partition stands still
  while it joins (the group rebalances once more).

"Processed" is seen in PostgreSQL: one HAVIP per partition of `vrrp.events`, its owner renewing its
claim every 50 ms; a partition is processed again when a renewal sent after the kill is stored.
Each profile gets its own topics, so its own consumer group (the embedded broker fixes a group's
session timeout when the group forms).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka.partitioner import DefaultPartitioner

from schemas import topics
from services.dev.bench_harness import bench_service, bench_stack
from services.dev.bench_renewals import renewal, seed_live_masters
from services.dev.benchkit import format_table, write_json
from services.dev.processes import ServiceProcess
from services.runtime.db import connect_pool
from services.runtime.kafka import ensure_topics, new_producer, topic_name
from services.runtime.settings import Settings

T = TypeVar("T")
PROBE_PERIOD = 0.05
SEEDED_HAVIPS = 64  # enough that every partition has one
SCENARIOS = {
    "takeover": "SIGKILL one of two workers: until every partition is processed again",
    "handover": "SIGTERM one of two workers: until every partition is processed again",
    "restart": "SIGKILL the only worker, start it again at once: until every partition is processed again",
    "start": "that restarted worker's process start: until every partition is processed",
    "rejoin": "the SIGKILLed one of two workers started again: the longest any partition stood still",
}


@dataclass(frozen=True)
class Profile:
    name: str
    session_timeout: float
    heartbeat_interval: float
    static: bool = False

    def settings(self, base: Settings) -> Settings:
        return base.model_copy(
            update={
                "topic_prefix": f"bench-{self.name}.",
                "worker_session_timeout_seconds": self.session_timeout,
                "worker_heartbeat_interval_seconds": self.heartbeat_interval,
            }
        )


def profiles(defaults: Settings, static: bool) -> list[Profile]:
    session, heartbeat = defaults.worker_session_timeout_seconds, defaults.worker_heartbeat_interval_seconds
    chosen = [Profile("before", 6.0, 1.0), Profile("after", session, heartbeat)]  # before: until issue 7
    if static:
        chosen.append(Profile("static", session, heartbeat, static=True))
    return chosen


def run_rebalance_bench(settings: Settings, rounds: int, static: bool, out_dir: Path) -> int:
    with bench_stack(settings, services=()) as stack:
        results = asyncio.run(_bench(stack.settings, stack.workdir, profiles(settings, static), rounds))
    _print_table(results, rounds)
    path = write_json(out_dir, rebalance_results(results, rounds))
    print(f"\nwrote {path}")
    return 0


def rebalance_results(results: list[tuple[Profile, Figures]], rounds: int) -> dict[str, Any]:
    """What results.json holds: per profile its timings and each scenario's seconds (null: never settled)."""
    return {
        "rounds": rounds,
        "scenarios": SCENARIOS,
        "profiles": [{**asdict(profile), "seconds": figures} for profile, figures in results],
    }


Figures = dict[str, list[float] | None]  # per scenario; None: the group never settled


async def _bench(base: Settings, workdir: Path, chosen: list[Profile], rounds: int) -> list[tuple[Profile, Figures]]:
    pool = await connect_pool(base.database_url)
    results = []
    try:
        await seed_live_masters(pool, SEEDED_HAVIPS)
        for profile in chosen:
            settings = profile.settings(base)
            await ensure_topics(settings)
            figures: Figures = {}
            async with Probes(settings, pool) as probes:
                run = Run(settings, profile, probes, workdir / profile.name, rounds)
                both = await run.measured("takeover", run.takeovers(ServiceProcess.kill))
                figures["takeover"], figures["rejoin"] = (None, None) if both is None else both
                both = await run.measured("handover", run.takeovers(ServiceProcess.stop))
                figures["handover"] = None if both is None else both[0]
                both = await run.measured("restart", run.restarts())
                figures["restart"], figures["start"] = (None, None) if both is None else both
            results.append((profile, figures))
    finally:
        await pool.close()
    return results


class Probes:
    """One HAVIP per partition, its owner renewing every PROBE_PERIOD; tells when a renewal is stored."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._pool = pool
        partitioner = DefaultPartitioner()
        everywhere = list(range(settings.partitions))
        by_partition: dict[int, int] = {}
        for n in range(SEEDED_HAVIPS):
            by_partition.setdefault(partitioner(f"havip-{n}".encode(), everywhere, everywhere), n)
        assert len(by_partition) == settings.partitions, "seed more HAVIPs: a partition has no probe"
        self._havips = sorted(by_partition.values())
        self._sent: list[tuple[float, int]] = []  # (when, seq), in order
        self._stalls: list[tuple[float, float]] = []  # (when it ended, how long): a probe's stored seq stood still
        self._producer = new_producer(settings)

    async def __aenter__(self) -> Probes:
        self._seq = await self._pool.fetchval("SELECT max(seq) FROM vrrp_reports") + 1
        await self._producer.start()
        self._tasks = [asyncio.get_running_loop().create_task(work()) for work in (self._renew, self._watch)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._producer.stop()

    async def _renew(self) -> None:
        topic = topic_name(self._settings, topics.VRRP)
        while True:
            self._seq += 1
            self._sent.append((time.monotonic(), self._seq))
            for n in self._havips:
                report = renewal(n, self._seq)
                await self._producer.send(topic, key=report.havip_id.encode(), value=topics.encode(report))
            await asyncio.sleep(PROBE_PERIOD)

    async def _watch(self) -> None:
        owners = [f"i-{2 * n}" for n in self._havips]
        stored: dict[str, tuple[int, float]] = {}  # havip -> (seq, when it was first seen)
        while True:
            rows = await self._pool.fetch("SELECT havip_id, seq FROM vrrp_reports WHERE instance_id = ANY($1)", owners)
            now = time.monotonic()
            for row in rows:
                seq, since = stored.get(row["havip_id"], (row["seq"], now))
                if row["seq"] != seq:
                    self._stalls.append((now, now - since))
                    since = now
                stored[row["havip_id"]] = (row["seq"], since)
            await asyncio.sleep(0.02)

    def longest_stall(self, since: float) -> float:
        """The longest any partition stood still, of the stalls that ended after `since`."""
        return max((length for ended, length in self._stalls if ended > since), default=0.0)

    async def processed_after(self, moment: float, timeout: float = 60.0) -> float:
        """Seconds from `moment` until every partition stored a renewal sent after it."""
        first = next((seq for sent, seq in self._sent if sent > moment), self._seq + 1)
        waiting = {f"havip-{n}" for n in self._havips}
        owners = [f"i-{2 * n}" for n in self._havips]
        while waiting:
            rows = await self._pool.fetch(
                "SELECT havip_id FROM vrrp_reports WHERE instance_id = ANY($1) AND seq >= $2", owners, first
            )
            waiting -= {row["havip_id"] for row in rows}
            if time.monotonic() - moment > timeout:
                raise TimeoutError(f"partitions of {sorted(waiting)} not processed {timeout}s after the kill")
            await asyncio.sleep(0.01)
        return time.monotonic() - moment


@dataclass
class Run:
    """One profile's scenarios, each with its own workers."""

    settings: Settings
    profile: Profile
    probes: Probes
    logs: Path
    rounds: int
    _workers: list[ServiceProcess] = field(default_factory=list)

    async def measured(self, scenario: str, work: Awaitable[T]) -> T | None:
        print(f"{self.profile.name}: {SCENARIOS[scenario]}, {self.rounds} rounds", flush=True)
        try:
            return await work
        except TimeoutError as exc:
            print(f"  the group never settled: {str(exc).splitlines()[0]}", flush=True)
            return None
        finally:
            for worker in self._workers:
                worker.stop()
            self._workers.clear()

    def _worker(self, n: int) -> ServiceProcess:
        static = {"worker_group_instance_id": f"mapping-{n}"} if self.profile.static else {}
        logs = self.logs / f"worker-{n}"
        logs.mkdir(parents=True, exist_ok=True)
        worker = bench_service("mapping", self.settings, logs, **static).start()
        self._workers.append(worker)
        return worker

    async def _settle(self, since: float) -> None:
        """Ready, processing, and past the broker expiring any member that died at `since`."""
        for worker in self._workers:
            await asyncio.to_thread(worker.wait_ready, 60.0)
        await asyncio.sleep(max(0.0, since + 2 * self.profile.session_timeout + 2 - time.monotonic()))
        await self.probes.processed_after(time.monotonic())

    async def takeovers(self, end: Callable[[ServiceProcess], None]) -> tuple[list[float], list[float]]:
        workers = [self._worker(n) for n in range(2)]
        await self._settle(time.monotonic())
        samples, rejoins = [], []
        for r in range(self.rounds):
            victim = workers[r % 2]
            moment = time.monotonic()
            await asyncio.to_thread(end, victim)
            samples.append(await self.probes.processed_after(moment))
            print(f"  round {r + 1}: every partition processed again after {samples[-1]:.2f} s", flush=True)
            rejoined = time.monotonic()
            victim.start()
            await self._settle(moment)
            rejoins.append(self.probes.longest_stall(rejoined))
        return samples, rejoins

    async def restarts(self) -> tuple[list[float], list[float]]:
        worker = self._worker(0)
        await self._settle(time.monotonic())
        restart, start = [], []
        for r in range(self.rounds):
            moment = time.monotonic()
            worker.kill()
            started = time.monotonic()
            worker.start()
            restart.append(await self.probes.processed_after(moment))
            start.append(restart[-1] - (started - moment))
            print(f"  round {r + 1}: every partition processed again after {restart[-1]:.2f} s", flush=True)
            await self._settle(moment)
        return restart, start


def _print_table(results: list[tuple[Profile, Figures]], rounds: int) -> None:
    def cell(samples: list[float] | None) -> str:
        return "never settled" if samples is None else f"{statistics.median(samples):.1f} (max {max(samples):.1f})"

    rows = [
        [
            profile.name,
            f"{profile.session_timeout:g} s / {profile.heartbeat_interval:g} s",
            profile.static,
            *(cell(figures[name]) for name in SCENARIOS),
        ]
        for profile, figures in results
    ]
    print(f"\nmapping worker, seconds, median (max) of {rounds} rounds:")
    print(format_table(["profile", "session/heartbeat", "static", *SCENARIOS], rows))
    for name, meaning in SCENARIOS.items():
        print(f"  {name}: {meaning}")
