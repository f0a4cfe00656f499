"""`havip bench keepalived`: real keepalived failovers, keepalived's notify to the forwarder's answer.

Starts the whole stack and a two-node keepalived lab (needs root and
keepalived), then repeats: SIGKILL of the primary's keepalived, its
preemption when it starts again, SIGKILL of the whole primary node (keepalived
and its agent) and its return. For each kind it prints keepalived's own time
(kill to the backup's MASTER notify; start to the primary's MASTER notify)
beside the platform's delay (that notify to the forwarder answering the new
owner), as median and worst over the rounds of one run.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from services.dev.keepalived_failover import FailoverCluster, FailoverTiming
from services.dev.keepalived_lab import lab_unavailable_reason
from services.dev.keepalived_scenarios import (
    both_start,
    keepalived_killed,
    node_killed,
    node_restarts,
    primary_preempts,
)
from services.dev.stack import dev_stack
from services.runtime.settings import Settings


def run_keepalived_bench(settings: Settings, rounds: int) -> int:
    unavailable = lab_unavailable_reason()
    if unavailable is not None:
        print(f"cannot run keepalived here: {unavailable}")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="havip-bench-"))
    print(f"starting a stack (logs in {workdir}) ...", flush=True)
    with dev_stack(settings, workdir) as stack:
        timings = asyncio.run(_bench(stack.settings, stack.url("gateway"), stack.url("forwarder"), workdir, rounds))
    _print_summary(timings)
    return 0


async def _bench(
    settings: Settings, gateway_url: str, forwarder_url: str, workdir: Path, rounds: int
) -> list[FailoverTiming]:
    timings: list[FailoverTiming] = []
    async with FailoverCluster(settings, gateway_url, forwarder_url, workdir) as cluster:
        await both_start(cluster)
        for round_ in range(rounds):
            for scenario in (keepalived_killed, primary_preempts, node_killed, node_restarts):
                timing = await scenario(cluster)
                timings.append(timing)
                print(f"round {round_ + 1}: {timing.describe()}", flush=True)
    return timings


def _print_summary(timings: list[FailoverTiming]) -> None:
    by_scenario: dict[str, list[FailoverTiming]] = defaultdict(list)
    for timing in timings:
        by_scenario[timing.scenario].append(timing)
    print()
    print(f"{'scenario':<22} {'n':>3}  {'keepalived median/worst':>24}  {'notify -> forwarder median/worst':>33}")
    for scenario, found in by_scenario.items():
        keepalived = [t.keepalived_seconds * 1000 for t in found]
        platform = [t.platform_seconds * 1000 for t in found]
        print(
            f"{scenario:<22} {len(found):>3}  {statistics.median(keepalived):>12.0f} / {max(keepalived):>5.0f} ms"
            f"  {statistics.median(platform):>21.0f} / {max(platform):>5.0f} ms"
        )
