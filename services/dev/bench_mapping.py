"""`havip bench mapping`: VRRP reports one mapping worker applies per second, sustained.

HAVIPs are seeded straight into the mapping tables (two attached instances,
the first owning each with a live claim), one mapping worker is started, and
reports are sent for a fixed time, three kinds in turn:

  renewals                 lease renewals as the gateway carries them: the newest of each
                           claim written to `claim_renewals`, which the worker takes on
                           its sweep (nothing changes but the lease)
  renewals on the log      the same renewals produced straight to `vrrp.events`, as an
                           older gateway (or a platform of its own) would send them
  state changes            produced straight to `vrrp.events`: the owner steps down, then
                           claims again, so each one moves the owner and publishes it

The producer keeps the worker busy (a bounded backlog on the log; every claim's renewal
pending in the table), so the worker is never idle; what it applied is read from its own
`/metrics` once a second.

The producer shares this machine with the worker, the broker and PostgreSQL;
the output says when the producer, not the worker, was the limit.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from schemas import topics
from schemas.messages import MAX_LEASE_SECONDS, VrrpReported, VrrpState
from services.dev.bench_harness import bench_service, bench_stack, scrape_metrics
from services.dev.bench_renewals import TENANT, seed_live_masters
from services.dev.benchkit import format_table, metric_sum, plot_rates, ratio, write_json
from services.gateway.renewals import write_renewals
from services.runtime.db import connect_pool
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings

# Records queued ahead of the worker: enough that it never waits for the producer,
# few enough that a fetch stays fast on the embedded broker (it slows as a partition grows).
BACKLOG = 20_000
WARMUP_SECONDS = 5.0
# The stream's figures for the mapping worker's reports; renewals are counted apart, taken from
# the table whichever way (the sweep, or with a state change of their HAVIP).
OF_REPORTS = {"service": "mapping", "topic": topics.VRRP.name}


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    per_second: list[float]  # applied in each whole second after the warm-up
    produced: int
    applied: int
    producer_bound_seconds: int  # seconds in which the backlog ran dry: the producer was the limit
    batches: int  # batches the worker applied
    batch_seconds: float  # time inside them (the rest is fetching and parsing)

    @property
    def median(self) -> float:
        return statistics.median(self.per_second) if self.per_second else 0.0

    @property
    def mean(self) -> float:
        return sum(self.per_second) / len(self.per_second) if self.per_second else 0.0


def run_mapping_bench(settings: Settings, havips: int, seconds: float, out_dir: Path) -> int:
    with bench_stack(settings, services=()) as stack:
        phases = asyncio.run(_bench(stack.settings, stack.workdir, havips, seconds))
    rows = [
        [
            phase.name,
            phase.median,
            phase.mean,
            phase.applied,
            ratio(phase.applied, phase.batches),
            ratio(1000 * phase.batch_seconds, phase.batches),
            f"{phase.batch_seconds / (WARMUP_SECONDS + phase.seconds):.0%}",
            phase.producer_bound_seconds,
        ]
        for phase in phases
    ]
    headers = ["reports", "median/s", "mean/s", "applied", "per batch", "ms/batch", "busy", "producer-bound s"]
    print("\n" + format_table(headers, rows))
    pngs = plot_rates(
        out_dir, "mapping-applied-per-second", {p.name: p.per_second for p in phases}, "reports applied per second"
    )
    path = write_json(out_dir, mapping_results(havips, seconds, phases))
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))
    return 0


def mapping_results(havips: int, seconds: float, phases: list[Phase]) -> dict[str, Any]:
    """What `results.json` holds: the run's size and, per kind of report, its rates and batches."""
    return {
        "havips": havips,
        "seconds": seconds,
        "phases": [
            {
                "name": p.name,
                "median_per_second": p.median,
                "mean_per_second": p.mean,
                "per_second": p.per_second,
                "produced": p.produced,
                "applied": p.applied,
                "producer_bound_seconds": p.producer_bound_seconds,
                "batches": p.batches,
                "batch_seconds": p.batch_seconds,
            }
            for p in phases
        ],
    }


async def _bench(settings: Settings, workdir: Path, havips: int, seconds: float) -> list[Phase]:
    pool = await connect_pool(settings.database_url)
    try:
        await seed_live_masters(pool, havips)
    finally:
        await pool.close()
    print(f"seeded {havips} HAVIPs, each owned by a live claim; starting one mapping worker", flush=True)
    worker = bench_service("mapping", settings, workdir).start()
    producer = new_producer(settings)
    await producer.start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        async with httpx.AsyncClient(base_url=worker.url, timeout=10) as metrics:
            renewals = Reports(havips, changes=False)
            changes = Reports(havips, changes=True)
            return [
                await _lane_phase(settings, metrics, havips, seconds),
                await _phase("renewals on the log", settings, producer, metrics, renewals.next, seconds),
                await _phase("state changes", settings, producer, metrics, changes.next, seconds),
            ]
    finally:
        await producer.stop()
        worker.stop()


class Reports:
    """VRRP reports as the agents would send them, newest seq per HAVIP, round robin over the HAVIPs."""

    def __init__(self, havips: int, *, changes: bool) -> None:
        self._havips = havips
        self._changes = changes
        self._n = 0

    def next(self) -> tuple[bytes, bytes]:
        havip, round_ = self._n % self._havips, self._n // self._havips
        self._n += 1
        if self._changes:
            # The owner steps down (BACKUP: nobody owns it), then claims again (MASTER): two owner changes.
            state, seq = ("BACKUP" if round_ % 2 == 0 else "MASTER"), 10**9 + round_
        else:
            state, seq = "MASTER", 2 + round_
        now = datetime.now(UTC).isoformat()
        report = {
            "message_id": str(uuid.uuid4()),
            "occurred_at": now,
            "schema_version": 1,
            "type": "VrrpReported",
            "havip_id": f"havip-{havip}",
            "tenant_id": TENANT,
            "instance_id": f"i-{2 * havip}",
            "state": state,
            "priority": 100,
            "seq": seq,
            "reported_at": now,
            "received_at": now,
            "lease_seconds": MAX_LEASE_SECONDS,
        }
        return f"havip-{havip}".encode(), json.dumps(report).encode()


async def _phase(
    name: str,
    settings: Settings,
    producer: AIOKafkaProducer,
    metrics: httpx.AsyncClient,
    make: Callable[[], tuple[bytes, bytes]],
    seconds: float,
) -> Phase:
    topic = topic_name(settings, topics.VRRP)
    start_applied, start_batches = await _applied(metrics), await _batches(metrics)
    applied = start_applied
    produced = 0
    stop = time.monotonic() + WARMUP_SECONDS + seconds

    async def produce() -> None:
        nonlocal produced
        while time.monotonic() < stop:
            if produced - (applied - start_applied) >= BACKLOG:
                await asyncio.sleep(0.005)
                continue
            sent = []
            for _ in range(500):
                key, value = make()
                sent.append(await producer.send(topic, key=key, value=value))
            await asyncio.gather(*sent)
            produced += len(sent)

    task = asyncio.get_running_loop().create_task(produce())
    per_second: list[float] = []
    dry = 0
    try:
        async for rate, applied, warm in _each_second(lambda: _applied(metrics), stop):
            backlog = produced - (applied - start_applied)
            if warm:
                per_second.append(rate)
                dry += backlog < 1000
            print(f"  {name}: {rate:9,.0f}/s applied, backlog {backlog:7,}", flush=True)
    finally:
        await task
    # Let the worker finish the backlog so the next phase starts clean.
    deadline = time.monotonic() + 120
    while applied - start_applied < produced and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        applied = await _applied(metrics)
    end_batches = await _batches(metrics)
    batches, batch_seconds = end_batches[0] - start_batches[0], end_batches[1] - start_batches[1]
    return Phase(name, seconds, per_second, produced, applied - start_applied, dry, int(batches), batch_seconds)


async def _each_second(read: Callable[[], Awaitable[int]], stop: float) -> AsyncIterator[tuple[float, int, bool]]:
    """Every second until `stop` (monotonic): how many a second `read` counted since the last
    look, its count now, and whether the warm-up is over."""
    began = last_at = time.monotonic()
    last = await read()
    while time.monotonic() < stop:
        await asyncio.sleep(1.0)
        count = await read()
        now = time.monotonic()
        yield (count - last) / (now - last_at), count, now - began > WARMUP_SECONDS
        last, last_at = count, now


async def _lane_phase(settings: Settings, metrics: httpx.AsyncClient, havips: int, seconds: float) -> Phase:
    """Renewals as the gateway leaves them: every claim's newest renewal pending in the table, always."""
    pool = await connect_pool(settings.database_url, max_size=2)
    start_applied = applied = await _renewals_applied(metrics)
    produced = 0
    stop = time.monotonic() + WARMUP_SECONDS + seconds
    seq = 10**12  # above any seq of the other phases

    async def produce() -> None:
        nonlocal produced, seq
        while time.monotonic() < stop:
            # Write a round over the claims the worker has taken (or a first round): each stays pending.
            pending = await pool.fetchval("SELECT count(*) FROM claim_renewals WHERE NOT taken")
            if pending > havips // 2:
                await asyncio.sleep(0.01)
                continue
            now = datetime.now(UTC)
            for first in range(0, havips, 2000):
                seq += 1
                batch = [_renewal(n, seq, now) for n in range(first, min(havips, first + 2000))]
                await write_renewals(pool, batch)
                produced += len(batch)

    task = asyncio.get_running_loop().create_task(produce())
    per_second: list[float] = []
    try:
        async for rate, applied, warm in _each_second(lambda: _renewals_applied(metrics), stop):
            if warm:
                per_second.append(rate)
            print(f"  renewals: {rate:9,.0f}/s applied, {produced - (applied - start_applied):7,} pending", flush=True)
    finally:
        await task
        await pool.close()
    # Written over while pending, a renewal is never taken: those count as produced, not applied.
    return Phase("renewals", seconds, per_second, produced, applied - start_applied, 0, 0, 0.0)


def _renewal(havip: int, seq: int, now: datetime) -> VrrpReported:
    return VrrpReported(
        havip_id=f"havip-{havip}",
        tenant_id=TENANT,
        instance_id=f"i-{2 * havip}",
        state=VrrpState.MASTER,
        priority=100,
        seq=seq,
        reported_at=now,
        received_at=now,
        lease_seconds=MAX_LEASE_SECONDS,
    )


async def _renewals_applied(metrics: httpx.AsyncClient) -> int:
    return int(metric_sum(await scrape_metrics(metrics), "havip_mapping_renewals_applied_total"))


async def _batches(metrics: httpx.AsyncClient) -> tuple[float, float]:
    """How many batches of reports the worker applied, and the seconds spent in them."""
    text = await scrape_metrics(metrics)
    return (
        metric_sum(text, "havip_stream_batch_seconds_count", **OF_REPORTS),
        metric_sum(text, "havip_stream_batch_seconds_sum", **OF_REPORTS),
    )


async def _applied(metrics: httpx.AsyncClient) -> int:
    return int(metric_sum(await scrape_metrics(metrics), "havip_stream_records_total", outcome="applied", **OF_REPORTS))
