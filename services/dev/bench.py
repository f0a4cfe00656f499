"""`havip bench failover`: VRRP report in, forwarder answers the new owner; how long, idle and under load?

The whole stack runs (gateway, quota, two mapping workers, forwarder) and
holds N HAVIPs (default 10,000, seeded into the mapping tables and published
to `havip.mappings`, so the forwarder follows them as it would in service).
One more HAVIP, made through the API as the README's walk-through does,
fails over between two instances again and again: the old master reports
BACKUP (not timed), the new one POSTs MASTER to the gateway, and the clock
runs until the forwarder applies the new owner (it says so on its watch
stream, which the bench follows: services/dev/owner_watch.py). The same rounds run twice:
idle, then with a background load of owner-changing reports and lease renewals
on the seeded HAVIPs, paced per second, from another process:

  --load-through gateway   a fleet of agents over HTTP (services/dev/bench_fleet.py),
                           each instance with its own token, masters renewing once a
                           second: what a real fleet sends, so renewals take their lane
  --load-through lanes     without HTTP, where the gateway would put it (services/dev/bench_load.py):
                           state changes to `vrrp.events`, renewals to `claim_renewals`; for
                           loads whose HTTP alone would need more cores than this machine has
  --load-through broker    produced straight to `vrrp.events`, renewals included: the load
                           as the earlier benches sent it
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from schemas import topics
from services.dev import bench_seed
from services.dev.bench_fleet import fleet_split, start_fleet
from services.dev.bench_harness import bench_stack
from services.dev.bench_load import stop_load
from services.dev.benchkit import Progress, format_table, plot_latencies, spread, write_json
from services.dev.embedded import exit_with_parent
from services.dev.owner_watch import OwnerWatch, failover
from services.dev.processes import settings_env
from services.dev.stack import DEMO_TENANT_TOKEN, DevStack, demo_agent_tokens
from services.dev.walkthrough import Tenant, WalkthroughError
from services.runtime.db import connect_pool
from services.runtime.kafka import new_consumer, topic_name
from services.runtime.settings import Settings
from services.runtime.worker import group_id

OLD, NEW = "i-demo-web1", "i-demo-web2"
WARM_UP_SECONDS = 5.0  # the load reaches its pace, and a backlog (if the workers fall behind) starts to show


@dataclass
class Phase:
    label: str
    samples_ms: list[float]
    stopped: str = ""  # why the phase ended early, if it did
    load: dict[str, Any] | None = None  # what the background really sent, per second
    backlog: tuple[int | None, int | None] | None = None  # mapping's uncommitted reports, at start and end


class LoadThrough(StrEnum):
    """Which way `bench failover`'s background load travels."""

    GATEWAY = "gateway"  # agents over HTTP, as a fleet
    LANES = "lanes"  # where the gateway would put it, without HTTP
    BROKER = "broker"  # everything straight to vrrp.events, renewals too

    @property
    def described(self) -> str:
        return {
            LoadThrough.GATEWAY: "agents over HTTP through the gateway",
            LoadThrough.LANES: "state changes to vrrp.events, renewals to claim_renewals",
            LoadThrough.BROKER: "all straight to vrrp.events",
        }[self]


def run_failover_bench(
    settings: Settings,
    rounds: int,
    havips: int,
    reports_per_second: float,
    renewals_per_second: float,
    round_timeout: float,
    out_dir: Path,
    load_through: LoadThrough | str = LoadThrough.GATEWAY,
) -> int:
    load_through = LoadThrough(load_through)
    with bench_stack(settings) as stack:
        phases = asyncio.run(
            _bench(
                stack,
                rounds,
                havips,
                (reports_per_second, renewals_per_second),
                round_timeout,
                stack.workdir,
                load_through,
            )
        )
    _report(phases, havips, (reports_per_second, renewals_per_second), out_dir, load_through)
    return 0


async def _bench(
    stack: DevStack,
    rounds: int,
    havips: int,
    rates: tuple[float, float],
    round_timeout: float,
    workdir: Path,
    load_through: LoadThrough,
) -> list[Phase]:
    settings = stack.settings
    renewing, changing = fleet_split(havips, rates[1])
    pool = await connect_pool(settings.database_url)
    try:
        await bench_seed.ensure_havips(pool, havips)
        published = await bench_seed.publish_mappings(settings, pool)
        if load_through is LoadThrough.GATEWAY:
            owners = [bench_seed.owner_of(n) for n in range(renewing + changing)]
            await bench_seed.seed_agent_tokens(pool, owners)
            print(f"seeded {len(owners):,} agent tokens for the fleet", flush=True)
    finally:
        await pool.close()
    print(f"published {published:,} HAVIPs to havip.mappings", flush=True)
    async with (
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as gateway,
        httpx.AsyncClient(base_url=stack.url("forwarder"), timeout=30) as forwarder,
    ):
        tenant = Tenant(gateway, forwarder, DEMO_TENANT_TOKEN, demo_agent_tokens())
        last = havips - 1
        await tenant.wait_owner(bench_seed.VPC, bench_seed.havip_address(last), bench_seed.owner_of(last), 120)
        print(f"the forwarder holds the {havips:,} seeded HAVIPs", flush=True)
        havip = await tenant.create_havip("vsw-demo-a", name="bench-failover")
        for instance in (OLD, NEW):
            operation = await tenant.attach(havip["havip_id"], instance)
            if operation["status"] != "Succeeded":
                raise WalkthroughError(f"attaching {instance} failed: {operation}")
        havip = await tenant.havip(havip["havip_id"])
        async with OwnerWatch(forwarder, havip["vpc_id"]) as watch:
            idle = await _failovers(tenant, watch, havip, rounds, round_timeout, "idle")
            if load_through is LoadThrough.GATEWAY:
                load = start_fleet(settings, stack.url("gateway"), workdir, renewing, changing, rates)
            else:
                load = _start_load(
                    settings, workdir, havips, rates, renewals_to_table=load_through is LoadThrough.LANES
                )
            try:
                print(f"background load started; measuring after {WARM_UP_SECONDS:g} s of it", flush=True)
                await asyncio.sleep(WARM_UP_SECONDS)
                backlog_before = await mapping_backlog(settings)
                loaded = await _failovers(tenant, watch, havip, rounds, round_timeout, "loaded")
                loaded.backlog = (backlog_before, await mapping_backlog(settings))
            finally:
                loaded_rates = stop_load(load, workdir / "bench-load.log")
    loaded.load = loaded_rates
    return [idle, loaded]


async def mapping_backlog(settings: Settings) -> int | None:
    """Reports the mapping workers have not applied yet: on `vrrp.events` not committed, and renewals
    waiting in `claim_renewals`; None when it cannot tell.

    A probe that never subscribes, so it never joins (and never disturbs) the workers' group.
    The group of a fresh stack (epoch 0): after a broker loss the workers move to a new one.
    """
    probe = new_consumer(settings, group_id(settings, "mapping"))
    try:
        await probe.start()
        topic = topic_name(settings, topics.VRRP)
        await probe.topics()  # refreshes the cluster metadata
        partitions = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or ())]
        ends = await probe.end_offsets(partitions)
        backlog = 0
        for tp, end in ends.items():
            backlog += end - (await probe.committed(tp) or 0)
    except KafkaError:
        return None
    finally:
        await probe.stop()
    return backlog + await renewals_waiting(settings)


async def renewals_waiting(settings: Settings) -> int:
    """Renewals gateways left that no mapping worker has taken yet (0 on a build without the table)."""
    connection = await asyncpg.connect(settings.database_url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM claim_renewals WHERE NOT taken"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await connection.close()


async def _failovers(
    tenant: Tenant, watch: OwnerWatch, havip: dict[str, Any], rounds: int, timeout: float, label: str
) -> Phase:
    """Milliseconds from POSTing the new master's MASTER report to the forwarder applying it, per round.

    A round that does not converge within `timeout` ends the phase: the
    rounds after it would only measure the same backlog.
    """
    vpc, ip, havip_id = havip["vpc_id"], havip["ip_address"], havip["havip_id"]
    phase = Phase(label, [])
    progress = Progress(f"failovers ({label})", rounds)
    try:
        route = await tenant.route(vpc, ip)
        owner = route["instance_id"] if route else None
        old, new = (NEW, OLD) if owner == NEW else (OLD, NEW)
        if owner != old:
            await tenant.report(havip_id, old, "MASTER")
            await tenant.wait_owner(vpc, ip, old, timeout)
        for done in range(rounds):
            phase.samples_ms.append(await failover(tenant, watch, havip, old, new, timeout))
            old, new = new, old
            progress.update(done + 1)
    except WalkthroughError as exc:
        phase.stopped = f"stopped after {len(phase.samples_ms)} rounds: {exc}"
        print(f"\n{label}: {phase.stopped}", flush=True)
    progress.finish(len(phase.samples_ms))
    return phase


def _start_load(
    settings: Settings, workdir: Path, havips: int, rates: tuple[float, float], *, renewals_to_table: bool
) -> subprocess.Popen[bytes]:
    reports, renewals = rates
    command = [sys.executable, "-m", "services.dev.bench_load", "--havips", str(havips)]
    command += ["--reports-per-second", f"{reports:g}", "--renewals-per-second", f"{renewals:g}"]
    command += ["--renewals-to", "table" if renewals_to_table else "log"]
    with open(workdir / "bench-load.log", "ab") as out:
        return subprocess.Popen(
            command, env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT, preexec_fn=exit_with_parent
        )


def _report(
    phases: list[Phase], havips: int, asked: tuple[float, float], out_dir: Path, load_through: LoadThrough
) -> None:
    rows: list[list[Any]] = []
    results: dict[str, Any] = {"havips": havips, "phases": {}, "load_through": load_through}
    results["background_asked_per_second"] = {"reports": asked[0], "renewals": asked[1]}
    for phase in phases:
        found = spread(phase.samples_ms) if phase.samples_ms else None
        load = phase.load or {}
        rows.append(
            [
                phase.label,
                len(phase.samples_ms),
                found.p50 if found else None,
                found.p99 if found else None,
                found.max if found else None,
                load.get("reports_per_second"),
                load.get("renewals_per_second"),
                phase.backlog[0] if phase.backlog else None,
                phase.backlog[1] if phase.backlog else None,
                "yes" if phase.stopped else "",
            ]
        )
        results["phases"][phase.label] = {
            "failovers": len(phase.samples_ms),
            "convergence_ms": found.as_dict() if found else None,
            "stopped": phase.stopped,
            "background_load": phase.load,
            "mapping_backlog_at_start_and_end": phase.backlog,
            "samples_ms": phase.samples_ms,
        }
    print("\nfailover convergence: POST /v1/vrrp-events MASTER -> the forwarder answers the new owner")
    print(f"(stack holding {havips:,} seeded HAVIPs; background load {load_through.described})")
    headers = ["phase", "failovers", "p50 ms", "p99 ms", "max ms", "bg reports/s", "bg renewals/s"]
    headers += ["backlog start", "backlog end", "stopped early"]
    print(format_table(headers, rows))
    for phase in phases:
        if phase.stopped:
            print(f"{phase.label}: {phase.stopped}")
        if phase.load is not None:
            sent = phase.load["reports_per_second"], phase.load["renewals_per_second"]
            short = any(s < 0.9 * a for s, a in zip(sent, asked, strict=True))
            print(
                f"{phase.label}: background asked {asked[0]:,.0f} reports/s + {asked[1]:,.0f} renewals/s,"
                f" sent {sent[0]:,.0f} + {sent[1]:,.0f}" + (" (the load generator fell short)" if short else "")
            )
            if "answers" in phase.load:
                answered = ", ".join(f"{count:,} x {status}" for status, count in phase.load["answers"].items())
                print(f"{phase.label}: the gateway answered {answered} (0: no answer, the connection failed)")
    print(
        "backlog: reports the mapping workers had not applied (on vrrp.events not committed, renewals waiting in"
        " claim_renewals), as the phase started and ended"
    )
    pngs = plot_latencies(out_dir, "failover", {phase.label: phase.samples_ms for phase in phases})
    path = write_json(out_dir, results)
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))
