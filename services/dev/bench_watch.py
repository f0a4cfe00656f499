"""`havip bench watch`: from the forwarder applying a change to every watcher having it.

One forwarder, N seeded HAVIPs (default 10,000; loaded as its snapshot), and
`--watchers` watch streams (default 1,000) held by a few client processes
(services/dev/bench_watchers.py), each starting at the forwarder's current
position (`since` and `epoch`: no table, only what changes from then on).

Changes are HaVipMappingChanged records produced straight to `havip.mappings`,
paced (default 20 a second), each moving one HAVIP's owner to its other
instance with a newer version. No mapping worker runs: what is measured is
the forwarder and its watchers alone, not the mapping service, and every
change is known by `(havip_id, version)` before it is sent.

When did the forwarder apply it? The watch lines carry no time, so the
forwarder's own /metrics says: `havip_forwarder_apply_lag_seconds` is
`applied - occurred_at` of the last record applied, and the bench sets
`occurred_at` itself. At the end of each change's slot, before the next
change is sent, the bench reads /metrics; when the applied-records counter
shows exactly this change applied, the change is dated (otherwise it is left
undated and counted). That read is one small request per change on the
forwarder's loop, after the change's fan-out in all but slow cases.

Reported per change: applied -> the last watcher having it (the headline,
target p99 <= 50 ms), produced -> the last watcher (adds the broker and the
fetch), first -> last watcher (the fan-out alone); per (change, watcher):
applied -> received; and the share of watchers that had each change.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiokafka import AIOKafkaProducer

from schemas import topics
from schemas.messages import HaVipMappingChanged, HaVipStatus, MappedAttachment, Route
from services.dev import bench_seed
from services.dev.bench_harness import bench_service, bench_stack, scrape_metrics
from services.dev.benchkit import Progress, format_table, metric_value, plot_latencies, write_json
from services.dev.watch_clients import WatchClients
from services.dev.watch_delays import (
    ChangeKey,
    ProducedChange,
    applied_position,
    change_delays,
    per_watcher_ms,
    summarise,
)
from services.runtime.db import connect_pool
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings

TARGET_P99_MS = 50.0
DATING_GIVES_UP_SECONDS = 5.0  # a change not applied by then stays undated (and shows in the count)
DELIVERY_QUIET_SECONDS = 5.0  # after the last change: stop waiting once no watcher received anything for this long


@dataclass
class WatchRun:
    havips: int
    watchers: int
    per_second: float
    processes: int
    produced: list[ProducedChange]
    receipts: dict[ChangeKey, list[float]]
    tally: dict[str, int]
    load_average: tuple[tuple[float, float, float], tuple[float, float, float]]  # as the changes start and end
    # CPU seconds the forwarder and the client processes used from the first change to the last delivery,
    # and that span's wall seconds: which side was busy, on a machine with few cores
    cpu_seconds: dict[str, float]


def run_watch_bench(
    settings: Settings, havips: int, watchers: int, changes: int, per_second: float, processes: int, out_dir: Path
) -> int:
    if changes > havips:
        raise SystemExit("--changes must not exceed --havips: each change moves another HAVIP")
    with bench_stack(settings, services=()) as stack:
        run = asyncio.run(_bench(stack.settings, stack.workdir, havips, watchers, changes, per_second, processes))
    _report(run, out_dir)
    return 0


async def _bench(
    settings: Settings, workdir: Path, havips: int, watchers: int, changes: int, per_second: float, processes: int
) -> WatchRun:
    pool = await connect_pool(settings.database_url)
    try:
        await bench_seed.ensure_havips(pool, havips)
    finally:
        await pool.close()
    forwarder = bench_service("forwarder", settings, workdir)
    print("starting a forwarder: it loads the HAVIPs as its snapshot ...", flush=True)
    forwarder.start()
    try:
        await asyncio.to_thread(forwarder.wait_ready, 300)
        async with httpx.AsyncClient(base_url=forwarder.url, timeout=10) as http:
            epoch, revision = await _position(http)
            print(f"opening {watchers:,} watch streams ({processes} processes) at revision {revision}", flush=True)
            async with WatchClients(forwarder.url, watchers, processes, epoch, revision, workdir) as clients:
                open_streams = metric_value(await scrape_metrics(http), "havip_forwarder_watchers")
                if open_streams is None or open_streams < watchers:
                    raise RuntimeError(f"the forwarder counts {open_streams} watchers, not {watchers}")
                load_before = os.getloadavg()
                assert forwarder.process is not None
                sides = {"forwarder": [forwarder.process.pid], "clients": clients.pids}
                cpu_before, wall_before = _cpu(sides), time.monotonic()
                produced = await _produce(settings, http, havips, changes, per_second, watchers)
                await clients.wait_delivered(changes * watchers, DELIVERY_QUIET_SECONDS)
                load_after = os.getloadavg()
                cpu_after = _cpu(sides)
                cpu = {side: cpu_after[side] - cpu_before[side] for side in sides}
                cpu["wall"] = time.monotonic() - wall_before
                receipts, tally = await clients.report()
    finally:
        forwarder.stop()
    return WatchRun(havips, watchers, per_second, processes, produced, receipts, tally, (load_before, load_after), cpu)


def _cpu(sides: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds each side's processes used so far."""
    used = {}
    for side, pids in sides.items():
        times = [psutil.Process(pid).cpu_times() for pid in pids]
        used[side] = sum(t.user + t.system for t in times)
    return used


async def _position(http: httpx.AsyncClient) -> tuple[str, int]:
    """The forwarder's epoch and revision now, from a watch of a VPC nobody uses (its hello, no table)."""
    async with http.stream("GET", "/v1/routes:watch", params={"vpc_id": "vpc-bench-nobody"}) as answer:
        answer.raise_for_status()
        async for line in answer.aiter_lines():
            hello = json.loads(line)
            return hello["epoch"], hello["revision"]
    raise RuntimeError("the watch stream ended before its hello line")


def bench_change(i: int, havips: int, version: int) -> HaVipMappingChanged:
    """Change i: HAVIP i % havips moves to its other instance (the standby first), at `version`."""
    n = i % havips
    owner_instance = bench_seed.standby_of(n) if (i // havips) % 2 == 0 else bench_seed.owner_of(n)
    k = int(owner_instance.removeprefix("i-"))  # seeded instance i-k: 10.0.0.0 + k on host-(k % 64)
    return HaVipMappingChanged(
        havip_id=f"havip-{n}",
        tenant_id=bench_seed.TENANT,
        vpc_id=bench_seed.VPC,
        vswitch_id="vsw-bench",
        ip_address=bench_seed.havip_address(n),
        status=HaVipStatus.IN_USE,
        owner=Route(instance_id=owner_instance, private_ip=_instance_ip(k), host_id=f"host-{k % 64}"),
        attachments=[
            MappedAttachment(target_id=iid, instance_id=iid)
            for iid in (bench_seed.owner_of(n), bench_seed.standby_of(n))
        ],
        version=version,
        occurred_at=datetime.now(UTC),
    )


def _instance_ip(k: int) -> str:
    return f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"


async def _produce(
    settings: Settings, http: httpx.AsyncClient, havips: int, changes: int, per_second: float, watchers: int
) -> list[ProducedChange]:
    producer = new_producer(settings)
    await producer.start()
    topic = topic_name(settings, topics.MAPPINGS)
    # Versions from the clock: newer than the seeded HAVIPs' and than any earlier run's on a kept stack.
    first_version = time.time_ns() // 1_000_000
    applied_before, _ = applied_position(await scrape_metrics(http))
    produced: list[ProducedChange] = []
    progress = Progress(f"changes to {watchers:,} watchers", changes)
    started = time.monotonic()
    try:
        for i in range(changes):
            await _sleep_until(started + i / per_second)
            change = bench_change(i, havips, first_version + i)
            await _send(producer, topic, change)
            occurred = change.occurred_at.timestamp()
            applied_at = await _applied_at(http, applied_before + i + 1, occurred, started + (i + 1) / per_second)
            produced.append(ProducedChange((change.havip_id, change.version), occurred, applied_at))
            progress.update(i + 1)
    finally:
        await producer.stop()
    progress.finish(len(produced))
    return produced


async def _send(producer: AIOKafkaProducer, topic: str, change: HaVipMappingChanged) -> None:
    await producer.send_and_wait(topic, key=change.havip_id.encode(), value=topics.encode(change))


async def _applied_at(http: httpx.AsyncClient, expected: int, occurred: float, slot_end: float) -> float | None:
    """When the forwarder applied the change it counts as its `expected`th; None when /metrics cannot tell."""
    await _sleep_until(slot_end)  # read /metrics after the change's fan-out, not during it
    give_up = time.monotonic() + DATING_GIVES_UP_SECONDS
    while True:
        applied, lag = applied_position(await scrape_metrics(http))
        if applied == expected and lag is not None:
            return occurred + lag
        if applied > expected or time.monotonic() > give_up:
            return None
        await asyncio.sleep(0.02)  # not faster: each read of /metrics costs the forwarder's loop a little


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _report(run: WatchRun, out_dir: Path) -> None:
    delays = change_delays(run.produced, run.receipts, run.watchers)
    each = per_watcher_ms(run.produced, run.receipts)
    summary = summarise(delays, each, run.watchers)
    rows = []
    for label, key in (
        ("applied -> last watcher, per change", "applied_to_last_watcher_ms"),
        ("applied -> each watcher", "applied_to_each_watcher_ms"),
        ("produced -> last watcher, per change", "produced_to_last_watcher_ms"),
        ("first -> last watcher (fan-out), per change", "first_to_last_watcher_ms"),
    ):
        found = summary[key] or {}
        rows.append([label, found.get("count"), found.get("p50"), found.get("p99"), found.get("max")])
    print(
        f"\nwatch: {run.watchers:,} watchers on one forwarder holding {run.havips:,} HAVIPs,"
        f" {len(run.produced)} changes at {run.per_second:g}/s, clients in {run.processes} processes"
    )
    print(format_table(["delay", "samples", "p50 ms", "p99 ms", "max ms"], rows))
    print(
        f"\nwatchers that had each change: min {summary['share_of_watchers_min']:.1%},"
        f" mean {summary['share_of_watchers_mean']:.1%};"
        f" {summary['changes_every_watcher_had']} of {summary['changes']} changes reached every watcher"
    )
    print(f"changes dated from the forwarder's /metrics: {summary['changes_applied_at_known']} of {summary['changes']}")
    headline = summary["applied_to_last_watcher_ms"]
    if headline:
        verdict = "met" if headline["p99"] <= TARGET_P99_MS else "missed"
        print(f"target p99 <= {TARGET_P99_MS:g} ms (applied -> last watcher): {headline['p99']:.1f} ms, {verdict}")
    start_load, end_load = run.load_average[0][0], run.load_average[1][0]
    print(f"clients: {run.tally}; load average {start_load:.1f} at start, {end_load:.1f} at end")
    produced_times = [change.produced_at for change in run.produced]
    span = produced_times[-1] - produced_times[0] if len(produced_times) > 1 else 0.0
    achieved = (len(produced_times) - 1) / span if span > 0 else None
    wall = run.cpu_seconds["wall"]
    print(
        f"pace asked {run.per_second:g}/s, achieved {achieved or 0:.1f}/s (each change waits for /metrics to date it);"
        f" CPU over {wall:.1f} s: forwarder {run.cpu_seconds['forwarder']:.1f} s,"
        f" clients {run.cpu_seconds['clients']:.1f} s ({os.cpu_count()} cores)"
    )
    results: dict[str, Any] = {
        "havips": run.havips,
        "per_second": run.per_second,
        "client_processes": run.processes,
        "cpus": os.cpu_count(),
        "load_average_start_end": run.load_average,
        "clients": run.tally,
        "achieved_per_second": achieved,
        "cpu_seconds": run.cpu_seconds,
        **summary,
        "per_change": [
            {
                "havip_id": d.key[0],
                "version": d.key[1],
                "had_it": d.had_it,
                "applied_to_last_ms": d.to_last_ms,
                "produced_to_last_ms": d.produced_to_last_ms,
                "first_to_last_ms": d.first_to_last_ms,
            }
            for d in delays
        ],
    }
    last_series = {
        "applied -> last watcher": [d.to_last_ms for d in delays if d.to_last_ms is not None],
        "produced -> last watcher": [d.produced_to_last_ms for d in delays if d.produced_to_last_ms is not None],
        "first -> last watcher": [d.first_to_last_ms for d in delays if d.first_to_last_ms is not None],
    }
    pngs = plot_latencies(out_dir, "watch-per-change", last_series)
    pngs += plot_latencies(out_dir, "watch-per-watcher", {"applied -> each watcher": each})
    path = write_json(out_dir, results)
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))
