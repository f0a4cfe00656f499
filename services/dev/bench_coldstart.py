"""`havip bench coldstart`: how long a forwarder takes to be ready, and how much memory it holds, per fleet size.

A forwarder that starts (a new replica, a restart after a crash) answers
nothing until it has loaded the whole mapping from PostgreSQL and caught up
with `havip.mappings`; its readiness says so. For each size the bench grows
the mapping tables to that many HAVIPs (seeded in PostgreSQL, not through
the API), starts a forwarder process and times process start to the first
200 from /readyz, then reads its resident memory (psutil) at that moment.
The first row is an empty table: the cost of the process itself. Each size
is started a few times and the median start reported (all are in the JSON).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from services.dev import bench_seed
from services.dev.bench_harness import bench_service, bench_stack
from services.dev.benchkit import format_table, metric_value, plot_bars, write_json
from services.dev.processes import ServiceProcess
from services.runtime.db import connect_pool
from services.runtime.settings import Settings


def run_coldstart_bench(settings: Settings, sizes: list[int], starts: int, out_dir: Path) -> int:
    rows: list[dict[str, Any]] = []
    with bench_stack(settings, services=()) as stack:
        settings, workdir = stack.settings, stack.workdir
        for size in [0, *sorted(set(sizes))]:
            seed_seconds = asyncio.run(_grow_to(settings, size))
            each = []
            for start in range(starts):
                each.append(_start_forwarder(settings, workdir, size))
                print(
                    f"{size:>9,} HAVIPs, start {start + 1}/{starts}: ready in {each[-1]['ready_seconds']:.2f} s,"
                    f" RSS {each[-1]['rss_bytes'] / 2**20:,.0f} MiB",
                    flush=True,
                )
            # The median start: one start on a shared machine can be off by seconds.
            middle = sorted(each, key=lambda m: m["ready_seconds"])[len(each) // 2]
            rows.append({"havips": size, "seed_seconds": seed_seconds, **middle, "starts": each})
    _report(rows, out_dir)
    return 0


async def _grow_to(settings: Settings, size: int) -> float:
    """Seconds spent seeding up to `size` HAVIPs (0 when the tables already hold them)."""
    pool = await connect_pool(settings.database_url)
    try:
        started = time.perf_counter()
        # No VRRP reports: the snapshot does not read them, and a million would only slow the seeding.
        seeded = await bench_seed.ensure_havips(pool, size, live_claims=False)
        return time.perf_counter() - started if seeded else 0.0
    finally:
        await pool.close()


def _start_forwarder(settings: Settings, workdir: Path, size: int) -> dict[str, Any]:
    forwarder = bench_service("forwarder", settings, workdir, name=f"forwarder-{size}")
    started = time.perf_counter()
    forwarder.start()
    try:
        ready = _wait_ready(forwarder, started, timeout=900)
        assert forwarder.process is not None
        rss = psutil.Process(forwarder.process.pid).memory_info().rss
        held = metric_value(httpx.get(f"{forwarder.url}/metrics", timeout=10).text, "havip_forwarder_table_havips")
    finally:
        forwarder.stop()
    return {"ready_seconds": ready, "rss_bytes": rss, "table_havips": None if held is None else int(held)}


def _wait_ready(forwarder: ServiceProcess, started: float, timeout: float) -> float:
    """Seconds from `started` to the first 200 from /readyz, polled every 20 ms."""
    with httpx.Client(timeout=2) as client:
        while True:
            if forwarder.returncode is not None:
                raise RuntimeError(f"the forwarder exited with {forwarder.returncode}:\n{forwarder.tail()}")
            try:
                if client.get(f"{forwarder.url}/readyz").status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass  # not listening yet, or busy loading: both mean not ready
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"the forwarder was not ready after {timeout} s:\n{forwarder.tail()}")
            time.sleep(0.02)


def _report(rows: list[dict[str, Any]], out_dir: Path) -> None:
    base = rows[0]["rss_bytes"]
    table = []
    for row in rows:
        per_havip = (row["rss_bytes"] - base) / row["havips"] if row["havips"] else None
        row["rss_bytes_per_havip_over_empty"] = per_havip
        table.append(
            [
                row["havips"],
                row["table_havips"],
                row["seed_seconds"] or None,
                row["ready_seconds"],
                row["rss_bytes"] / 2**20,
                per_havip,
            ]
        )
    print(f"\nforwarder cold start, median of {len(rows[0]['starts'])} (process start to /readyz 200; RSS then)")
    print(format_table(["HAVIPs", "in table", "seed s", "ready s", "RSS MiB", "bytes/HAVIP"], table))
    labels = [f"{row['havips']:,}" for row in rows]
    pngs = plot_bars(out_dir, "coldstart-ready-seconds", labels, [r["ready_seconds"] for r in rows], "seconds to ready")
    pngs += plot_bars(
        out_dir, "coldstart-rss-mib", labels, [r["rss_bytes"] / 2**20 for r in rows], "RSS at ready (MiB)"
    )
    path = write_json(out_dir, {"sizes": rows})
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))
