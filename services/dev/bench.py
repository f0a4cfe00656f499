"""`havip bench failover`: VRRP report in, forwarder answers the new owner; how long?"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from pathlib import Path

import httpx

from services.dev.stack import DEMO_TENANT_TOKEN, demo_agent_tokens, dev_stack
from services.dev.walkthrough import Tenant, measure_failovers
from services.runtime.settings import Settings


def run_failover_bench(settings: Settings, rounds: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="havip-bench-"))
    print(f"starting a stack (logs in {workdir}) ...", flush=True)
    with dev_stack(settings, workdir) as stack:
        samples = asyncio.run(_bench(stack.url("gateway"), stack.url("forwarder"), rounds))
    _print_summary(samples)
    return 0


async def _bench(gateway_url: str, forwarder_url: str, rounds: int) -> list[float]:
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as gateway,
        httpx.AsyncClient(base_url=forwarder_url, timeout=30) as forwarder,
    ):
        tenant = Tenant(gateway, forwarder, DEMO_TENANT_TOKEN, demo_agent_tokens())
        havip = await tenant.create_havip("vsw-demo-a", name="bench")
        for instance in ("i-demo-web1", "i-demo-web2"):
            operation = await tenant.attach(havip["havip_id"], instance)
            assert operation["status"] == "Succeeded", operation
        havip = await tenant.havip(havip["havip_id"])
        return await measure_failovers(tenant, havip, "i-demo-web1", "i-demo-web2", rounds)


def _print_summary(samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    quantiles = statistics.quantiles(ms, n=100) if len(ms) >= 2 else ms * 99
    print(f"failovers: {len(ms)}  (POST /v1/vrrp-events MASTER -> forwarder answers the new owner)")
    print(
        f"  median {statistics.median(ms):.1f} ms   p90 {quantiles[89]:.1f} ms   p99 {quantiles[98]:.1f} ms"
        f"   min {ms[0]:.1f} ms   max {ms[-1]:.1f} ms"
    )
