"""`havip bench renewals`: how many lease renewals, and how many state changes, one mapping worker applies per second.

Every live master's agent renews its claim every second, so a fleet of 10,000
HAVIPs with a live master sends 10,000 renewals a second. The bench seeds
that many HAVIPs straight into the mapping tables (two attached instances,
the first one owning it with a live claim), queues renewals on `vrrp.events`
while the worker is stopped, starts one mapping worker and times how fast it
drains them; then the same for state changes (the owner steps down, the other
instance takes over), which take the full path and publish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from schemas import topics
from schemas.messages import MAX_LEASE_SECONDS, VrrpReported, VrrpState
from services.dev.bench_harness import bench_service, bench_stack
from services.dev.bench_seed import TENANT, seed_havips
from services.dev.benchkit import format_table, plot_bars, ratio, write_json
from services.runtime.db import connect_pool
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings

# The n-th report of a run.
MakeReport = Callable[[int], VrrpReported]


def run_renewal_bench(settings: Settings, havips: int, renewals: int, changes: int, out_dir: Path) -> int:
    with bench_stack(settings, services=()) as stack:
        renewal_rate, change_rate = asyncio.run(_bench(stack.settings, stack.workdir, havips, renewals, changes))
    results = renewal_results(havips, renewals, changes, renewal_rate, change_rate)
    rows = [
        ["renewals", renewal_rate, f"one mapping worker, {havips:,} HAVIPs with a live master"],
        ["state changes", change_rate, "owner steps down, the other takes over; full path + publish"],
    ]
    print("\n" + format_table(["reports", "applied/s", "what"], rows))
    print(f"a renewal costs {results['renewal_cost_in_changes']:.2f}x a state change")
    pngs = plot_bars(out_dir, "renewals-per-second", ["renewals", "state changes"], [renewal_rate, change_rate], "/s")
    path = write_json(out_dir, results)
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))
    return 0


def renewal_results(
    havips: int, renewals: int, changes: int, renewals_per_second: float, changes_per_second: float
) -> dict[str, Any]:
    """What results.json holds: the two drain rates and what a renewal costs in state changes."""
    return {
        "havips": havips,
        "renewals": renewals,
        "changes": changes,
        "renewals_per_second": renewals_per_second,
        "changes_per_second": changes_per_second,
        "renewal_cost_in_changes": ratio(changes_per_second, renewals_per_second),
    }


async def _bench(settings: Settings, workdir: Path, havips: int, renewals: int, changes: int) -> tuple[float, float]:
    pool = await connect_pool(settings.database_url)
    try:
        await seed_live_masters(pool, havips)
        print(f"seeded {havips} HAVIPs, each owned by a live claim", flush=True)
        renewal_rate = await _drain(
            settings, pool, workdir, renewals, lambda n: renewal(n % havips, 2 + n // havips), "renewals"
        )
        change_rate = await _drain(settings, pool, workdir, changes, lambda n: _change(n, havips), "state changes")
    finally:
        await pool.close()
    return renewal_rate, change_rate


async def seed_live_masters(pool: asyncpg.Pool, havips: int) -> None:
    """HAVIPs `havip-N`, each with instances i-2N and i-2N+1 attached, i-2N owning it with a live claim (seq 1)."""
    await seed_havips(pool, havips)


def renewal(havip: int, seq: int) -> VrrpReported:
    return _report(havip, f"i-{2 * havip}", VrrpState.MASTER, seq, MAX_LEASE_SECONDS)


def _change(n: int, havips: int) -> VrrpReported:
    # Round r on HAVIP h: the current owner steps down (BACKUP) or claims again (MASTER).
    havip, round_ = n % havips, n // havips
    state = VrrpState.BACKUP if round_ % 2 == 0 else VrrpState.MASTER
    return _report(havip, f"i-{2 * havip}", state, 10**9 + round_, MAX_LEASE_SECONDS)


def _report(havip: int, instance: str, state: VrrpState, seq: int, lease: float) -> VrrpReported:
    now = datetime.now(UTC)
    return VrrpReported(
        havip_id=f"havip-{havip}",
        tenant_id=TENANT,
        instance_id=instance,
        state=state,
        priority=100,
        seq=seq,
        reported_at=now,
        received_at=now,
        lease_seconds=lease,
    )


async def _drain(
    settings: Settings, pool: asyncpg.Pool, workdir: Path, count: int, make: MakeReport, label: str
) -> float:
    """Queue `count` reports with no worker running, then time one worker through them."""
    before = await pool.fetchval("SELECT coalesce(sum(seq), 0) FROM vrrp_reports")
    producer = new_producer(settings)
    await producer.start()
    try:
        topic = topic_name(settings, topics.VRRP)
        batch = []
        for n in range(count):
            report = make(n)
            batch.append(producer.send(topic, key=report.havip_id.encode(), value=topics.encode(report)))
            if len(batch) >= 1000:
                await asyncio.gather(*[await f for f in batch])
                batch.clear()
        await asyncio.gather(*[await f for f in batch])
    finally:
        await producer.stop()
    expected = await _expected_seq_sum(pool, before, count, make)
    print(f"queued {count} {label}; starting one mapping worker", flush=True)
    worker = bench_service("mapping", settings, workdir).start()
    try:
        first = await _wait(pool, lambda total: total > before, timeout=120)
        await _wait(pool, lambda total: total >= expected, timeout=600)
        elapsed = time.perf_counter() - first
    finally:
        worker.stop()
    return count / elapsed


async def _expected_seq_sum(pool: asyncpg.Pool, before: int, count: int, make: MakeReport) -> int:
    # The last report per (HAVIP, instance) wins; the sum of stored seqs tells when all are in.
    last: dict[tuple[str, str], int] = {}
    for n in range(count):
        report = make(n)
        last[(report.havip_id, report.instance_id)] = report.seq
    rows = await pool.fetch("SELECT havip_id, instance_id, seq FROM vrrp_reports")
    stored = {(r["havip_id"], r["instance_id"]): r["seq"] for r in rows}
    stored.update(last)
    return sum(stored.values())


async def _wait(pool: asyncpg.Pool, done: Callable[[int], bool], timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        total = await pool.fetchval("SELECT coalesce(sum(seq), 0) FROM vrrp_reports")
        now = time.perf_counter()
        if done(total):
            return now
        if now > deadline:
            raise TimeoutError(f"the mapping worker did not get there in {timeout}s (sum of seqs {total})")
        await asyncio.sleep(0.02)
