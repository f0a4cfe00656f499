"""`havip bench lookups`: the forwarder's answer from memory, against PostgreSQL's, in one run.

On one stack holding N HAVIPs (seeded into the mapping tables, then a
forwarder started so it loads them as its snapshot), one after the other:
  in-process  RouteTable.lookup in this process: the table alone
  fwd-single  GET /v1/routes?vpc_id=&ip= on the forwarder, from wrk
  fwd-batch   POST /v1/routes:batch, 1,000 keys a request, from wrk
  pg-direct   the same question as one indexed query, raw asyncpg, 32 tasks
  pg-http     that query behind the forwarder's HTTP stack (services/dev/pg_routes.py), from wrk
Every side picks keys at random from the seeded set; every lookup hits.
Load generator and servers share the machine: on 2 cores the ratios say
more than the absolute rates.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.dev import bench_seed
from services.dev.bench_harness import bench_service, bench_stack
from services.dev.bench_wrk import WrkRun, ensure_wrk, request_line, run_wrk
from services.dev.benchkit import Progress, Spread, format_table, plot_latencies, ratio, spread, write_json
from services.dev.embedded import free_port
from services.dev.pg_routes import ROUTE_BY_ADDRESS, lookup_route, start_pg_routes
from services.forwarder.routes import RouteTable
from services.readmodel.mappings import load_mappings
from services.runtime.db import connect_pool
from services.runtime.settings import Settings

BATCH_KEYS = 1000
PG_TASKS = 32
_KEYS_IN_FILE = 50_000  # wrk formats every line per thread at start: a sample is as random and starts fast

Key = tuple[str, str]


def run_lookups_bench(settings: Settings, havips: int, seconds: float, out_dir: Path) -> int:
    ensure_wrk()
    with bench_stack(settings, services=()) as stack:
        settings, workdir = stack.settings, stack.workdir
        asyncio.run(_seed(settings, havips))
        keys = [(bench_seed.VPC, bench_seed.havip_address(n)) for n in range(havips)]
        results: dict[str, Any] = {"havips": havips, "seconds_each": seconds}
        forwarder = bench_service("forwarder", settings, workdir)
        print("starting a forwarder: it loads the HAVIPs as its snapshot ...", flush=True)
        forwarder.start().wait_ready(timeout=300)
        try:
            _check_answers(forwarder.url, keys[-1])
            results["in_process"] = asyncio.run(_in_process(settings, keys, seconds))
            single = run_wrk("fwd-single", forwarder.url, _single_requests(keys), workdir, seconds=seconds)
            batch = run_wrk("fwd-batch", forwarder.url, _batch_requests(keys), workdir, seconds=seconds)
        finally:
            forwarder.stop()
        direct, plan = asyncio.run(_postgres_direct(settings, keys, seconds))
        pg_http = _postgres_http(settings, keys, seconds, workdir)
    results |= {
        "fwd_single": single.as_dict(),
        "fwd_batch": batch.as_dict() | {"keys_per_request": BATCH_KEYS, "keys_per_second": _keys_per_second(batch)},
        "pg_direct": direct,
        "pg_http": pg_http.as_dict(),
        "pg_plan": plan,
    }
    results["ratios"] = _ratios(results)
    _report(results, out_dir, single, batch, pg_http)
    return 0


async def _seed(settings: Settings, havips: int) -> None:
    pool = await connect_pool(settings.database_url)
    try:
        await bench_seed.ensure_havips(pool, havips)
    finally:
        await pool.close()


def _check_answers(url: str, key: Key) -> None:
    """Every side must answer the seeded owner; a bench of 404s would measure nothing."""
    answer = httpx.get(f"{url}/v1/routes", params={"vpc_id": key[0], "ip": key[1]}, timeout=10)
    if answer.status_code != 200 or not answer.json().get("instance_id"):
        raise RuntimeError(f"the forwarder does not hold the seeded HAVIPs: {answer.status_code} {answer.text}")


async def _in_process(settings: Settings, keys: list[Key], seconds: float) -> dict[str, Any]:
    pool = await connect_pool(settings.database_url)
    try:
        table = RouteTable()
        for mapping in await load_mappings(pool):
            table.apply(mapping)
    finally:
        await pool.close()
    drawn = random.choices(keys, k=100_000)
    lookup, chunk = table.lookup, 1000
    per_lookup_us: list[float] = []  # each sample: the mean of 1,000 lookups (one alone is below the clock's grain)
    progress = Progress("in-process lookups", seconds, unit="s", rate=False)
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        offset = random.randrange(0, len(drawn) - chunk)
        batch = drawn[offset : offset + chunk]
        t0 = time.perf_counter_ns()
        for vpc, ip in batch:
            lookup(vpc, ip)
        per_lookup_us.append((time.perf_counter_ns() - t0) / chunk / 1000)
        progress.update(elapsed)
    progress.finish(seconds)
    total_seconds = sum(per_lookup_us) * chunk / 1e6
    if lookup(*keys[0]) is None:
        raise RuntimeError("the route table built from the snapshot misses the seeded HAVIPs")
    return {
        "lookups": len(per_lookup_us) * chunk,
        "per_second": len(per_lookup_us) * chunk / total_seconds,
        "latency_us": spread(per_lookup_us).as_dict(),
    }


def _single_requests(keys: list[Key]) -> list[str]:
    sample = random.sample(keys, min(len(keys), _KEYS_IN_FILE))
    return [request_line("GET", f"/v1/routes?vpc_id={vpc}&ip={ip}") for vpc, ip in sample]


def _batch_requests(keys: list[Key], bodies: int = 64) -> list[str]:
    lines = []
    for _ in range(bodies):
        chosen = random.choices(keys, k=BATCH_KEYS)
        body = json.dumps({"keys": [{"vpc_id": vpc, "ip": ip} for vpc, ip in chosen]}, separators=(",", ":"))
        lines.append(request_line("POST", "/v1/routes:batch", body=body))
    return lines


def _keys_per_second(batch: WrkRun) -> float:
    return batch.per_second * BATCH_KEYS


async def _postgres_direct(settings: Settings, keys: list[Key], seconds: float) -> tuple[dict[str, Any], list[str]]:
    pool = await connect_pool(settings.database_url, min_size=PG_TASKS, max_size=PG_TASKS)
    try:
        plan = [row[0] for row in await pool.fetch(f"EXPLAIN {ROUTE_BY_ADDRESS}", *keys[0])]
        if not any("havips_vpc_ip" in line for line in plan):
            print("warning: PostgreSQL does not use havips_vpc_ip for the lookup:\n  " + "\n  ".join(plan))
        samples: list[float] = []
        misses = 0
        deadline = time.perf_counter() + seconds

        async def ask(conn: asyncpg.Connection) -> None:
            nonlocal misses
            while time.perf_counter() < deadline:
                vpc, ip = random.choice(keys)
                t0 = time.perf_counter()
                found = await lookup_route(conn, vpc, ip)
                samples.append((time.perf_counter() - t0) * 1000)
                misses += found is None

        async def one_task() -> None:
            async with pool.acquire() as conn:
                await ask(conn)

        progress = Progress(f"pg-direct: asyncpg, {PG_TASKS} tasks", seconds, unit="s", rate=False)
        tasks = [asyncio.create_task(one_task()) for _ in range(PG_TASKS)]
        started = time.perf_counter()
        while not all(task.done() for task in tasks):
            progress.update(min(seconds, time.perf_counter() - started))
            await asyncio.sleep(0.5)
        await asyncio.gather(*tasks)
        progress.finish(seconds)
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    result = {
        "queries": len(samples),
        "seconds": elapsed,
        "per_second": len(samples) / elapsed,
        "latency_ms": spread(samples).as_dict(),
        "misses": misses,
        "samples_ms": samples,
    }
    return result, plan


def _postgres_http(settings: Settings, keys: list[Key], seconds: float, workdir: Path) -> WrkRun:
    port = free_port()
    process = start_pg_routes(settings, port, workdir / "pg-routes.log")
    url = f"http://{settings.http_host}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pg-routes exited with {process.returncode}: see {workdir / 'pg-routes.log'}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("pg-routes not ready after 60 s")
            time.sleep(0.2)
        _check_answers(url, keys[-1])
        return run_wrk("pg-http", url, _single_requests(keys), workdir, seconds=seconds)
    finally:
        process.terminate()
        process.wait(15)


def _ratios(r: dict[str, Any]) -> dict[str, float | None]:
    single, pg_http, direct = r["fwd_single"]["per_second"], r["pg_http"]["per_second"], r["pg_direct"]["per_second"]
    return {
        "forwarder_single_vs_pg_http": ratio(single, pg_http),
        "forwarder_single_vs_pg_direct": ratio(single, direct),
        "pg_direct_vs_pg_http": ratio(direct, pg_http),
        "in_process_vs_forwarder_single": ratio(r["in_process"]["per_second"], single),
        "forwarder_batch_keys_vs_single": ratio(r["fwd_batch"]["keys_per_second"], single),
        "pg_http_p50_vs_forwarder_p50": ratio(r["pg_http"]["latency_ms"]["p50"], r["fwd_single"]["latency_ms"]["p50"]),
    }


def _report(results: dict[str, Any], out_dir: Path, single: WrkRun, batch: WrkRun, pg_http: WrkRun) -> None:
    def row(name: str, what: str, rate: float, unit: str, latency_ms: Spread | dict[str, Any], bad: int) -> list[Any]:
        ms = latency_ms.as_dict() if isinstance(latency_ms, Spread) else latency_ms
        return [name, what, rate, unit, ms["p50"] * 1000, ms["p99"] * 1000, ms["max"] * 1000, bad]

    inp, direct = results["in_process"], results["pg_direct"]
    rows = [
        row("in-process", "RouteTable.lookup", inp["per_second"], "lookups/s", _us_as_ms(inp["latency_us"]), 0),
        row("fwd-single", "GET /v1/routes", single.per_second, "req/s", single.latency_ms, single.non_2xx()),
        row(
            "fwd-batch", f"{BATCH_KEYS} keys/req", _keys_per_second(batch), "keys/s", batch.latency_ms, batch.non_2xx()
        ),
        row(
            "pg-direct",
            f"asyncpg {PG_TASKS} tasks",
            direct["per_second"],
            "queries/s",
            direct["latency_ms"],
            direct["misses"],
        ),
        row("pg-http", "pg_routes GET", pg_http.per_second, "req/s", pg_http.latency_ms, pg_http.non_2xx()),
    ]
    print()
    print(f"lookups on {results['havips']:,} HAVIPs, {results['seconds_each']:g} s each")
    print(format_table(["side", "what", "rate", "unit", "p50 us", "p99 us", "max us", "non-2xx/miss"], rows))
    print("\nratios (same run):")
    for name, value in results["ratios"].items():
        print(f"  {name:<34} {'-' if value is None else f'{value:,.2f}x'}")
    scan = next((line.strip() for line in results["pg_plan"] if "havips h" in line), results["pg_plan"][0])
    print(f"\npg-direct and pg-http find the HAVIP by: {scan}")
    samples = results["pg_direct"].pop("samples_ms")
    series = {"fwd-single (wrk)": single.quantiles_ms, "pg-http (wrk)": pg_http.quantiles_ms, "pg-direct": samples}
    pngs = plot_latencies(out_dir, "lookups-single", series)
    pngs += plot_latencies(out_dir, "lookups-batch", {f"fwd-batch ({BATCH_KEYS} keys)": batch.quantiles_ms})
    path = write_json(out_dir, results)
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))


def _us_as_ms(us: dict[str, Any]) -> dict[str, float]:
    return {key: us[key] / 1000 for key in ("p50", "p99", "max")}
