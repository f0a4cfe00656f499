"""`havip bench intake`: VRRP reports a gateway accepts per second, one report a request, over HTTP.

The agent path is `POST /v1/vrrp-events` with an agent token: the agent
directory (in memory) checks the reporter is attached, then one publish to
`vrrp.events`. The bench seeds HAVIPs (two attached instances each) and an
agent token per instance straight into the tables, starts one gateway (no
other service: nothing consumes `vrrp.events` meanwhile, so only the intake
is measured), and drives it with wrk, each request a random instance's
report: the owner renews its MASTER claim, the other reports BACKUP.

The gateway limits each agent token (50/s, burst 100 by default,
services/gateway/throttle.py). The bench leaves that limit as it is and
spreads the load over enough tokens that none comes near it, so a 429 in the
results is a finding, not an artefact; every non-2xx is counted by status.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx

from services.dev import bench_seed
from services.dev.bench_harness import bench_service, bench_stack
from services.dev.bench_wrk import WrkRun, ensure_wrk, request_line, run_wrk
from services.dev.benchkit import format_table, plot_latencies, write_json
from services.runtime.db import connect_pool
from services.runtime.settings import Settings

# A lease the owner renews within: the claim never lapses during the run.
_LEASE_SECONDS = 30.0


def run_intake_bench(settings: Settings, agents: int, seconds: float, connections: int, out_dir: Path) -> int:
    ensure_wrk()
    havips = math.ceil(agents / 2)
    with bench_stack(settings, services=()) as stack:
        settings, workdir = stack.settings, stack.workdir
        tokens = asyncio.run(_seed(settings, havips))
        gateway = bench_service("gateway", settings, workdir)
        print(f"seeded {havips:,} HAVIPs and {len(tokens):,} agent tokens; starting one gateway ...", flush=True)
        gateway.start().wait_ready()
        try:
            requests = _reports(tokens)
            _check_accepted(gateway.url, requests[0])
            run = run_wrk(
                "intake", gateway.url, requests, workdir, seconds=seconds, connections=connections, count_statuses=True
            )
        finally:
            gateway.stop()
    _report(run, settings, len(tokens), connections, out_dir)
    return 0


async def _seed(settings: Settings, havips: int) -> dict[str, str]:
    pool = await connect_pool(settings.database_url)
    try:
        await bench_seed.ensure_havips(pool, havips)
        instances = [iid for n in range(havips) for iid in (bench_seed.owner_of(n), bench_seed.standby_of(n))]
        return await bench_seed.seed_agent_tokens(pool, instances)
    finally:
        await pool.close()


def _reports(tokens: dict[str, str]) -> list[str]:
    """One prepared report per instance; replayed, each is a stale duplicate to mapping, still a 202 here."""
    seq = time.time_ns() // 1000  # microseconds: ahead of the seeded claims' seq 1, never a day ahead
    lines = []
    for instance_id, token in tokens.items():
        n = int(instance_id.removeprefix("i-")) // 2
        owner = instance_id == bench_seed.owner_of(n)
        body: dict[str, Any] = {
            "havip_id": f"havip-{n}",
            "state": "MASTER" if owner else "BACKUP",
            "priority": 100 if owner else 90,
            "seq": seq,
        }
        if owner:
            body["lease_seconds"] = _LEASE_SECONDS
        lines.append(request_line("POST", "/v1/vrrp-events", token, json.dumps(body, separators=(",", ":"))))
    return lines


def _check_accepted(url: str, line: str) -> None:
    """The prepared reports must be valid: a bench of refusals would measure the refusal path."""
    _, path, token, body = line.split("\t")
    answer = httpx.post(
        f"{url}{path}", content=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    if answer.status_code != 202:
        raise RuntimeError(f"the gateway refused a prepared report: {answer.status_code} {answer.text}")


def _report(run: WrkRun, settings: Settings, tokens: int, connections: int, out_dir: Path) -> None:
    accepted = sum(n for status, n in run.statuses.items() if 200 <= status < 300)
    per_token = run.per_second / tokens
    rows = [
        [
            "POST /v1/vrrp-events",
            accepted / run.seconds,
            run.per_second,
            run.latency_ms.p50,
            run.latency_ms.p99,
            run.latency_ms.max,
            run.non_2xx(),
        ]
    ]
    print(f"\nVRRP report intake: one gateway, one report a request, wrk -t2 -c{connections}, {run.seconds:.1f} s")
    print(format_table(["request", "accepted/s", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx"], rows))
    print(f"statuses: {dict(sorted(run.statuses.items()))}   wrk socket errors: {run.errors}")
    limit = f"{settings.agent_requests_per_second:g}/s burst {settings.agent_request_burst}"
    print(
        f"agent rate limit left at {limit} per token; {tokens:,} tokens picked at random,"
        f" {per_token:.1f} requests/s each on average, so the limit {'did not bind' if per_token < 25 else 'MAY BIND'}"
    )
    results = {
        "agents": tokens,
        "connections": connections,
        "accepted_per_second": accepted / run.seconds,
        "agent_rate_limit": {"per_second": settings.agent_requests_per_second, "burst": settings.agent_request_burst},
        "requests_per_token_per_second": per_token,
        "wrk": run.as_dict(),
    }
    pngs = plot_latencies(out_dir, "intake", {"POST /v1/vrrp-events": run.quantiles_ms})
    path = write_json(out_dir, results)
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))
