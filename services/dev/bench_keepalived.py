"""`havip bench keepalived`: real keepalived failovers, from what the platform first heard to the forwarder's answer.

Starts the whole stack and keepalived labs (needs root and keepalived), then repeats each
scenario for `rounds` rounds and prints, per scenario, keepalived's own time beside the
platform's delay, as median and worst over the rounds of one run.

How the platform learns (`source`):
- `agent`: `havip agent` beside each keepalived reads its notify FIFO. Per round: SIGKILL of the
  primary's keepalived, its preemption when it starts again, SIGKILL of the whole primary node
  (keepalived and its agent) and its return. Delays run from keepalived's notify.
- `observer`: keepalived alone, `havip observe` watching the nodes' ports. Delays run from the
  first advert of the new master the observer saw (for a graceful stop: from the resignation,
  the priority-0 advert). Adds per round the graceful stop, the split brain (was the forwarder
  on the priority-100 node throughout?), three nodes (100, 90, 80: kill the first, then the
  second) and an intruder (an instance not attached, advertising the VIP at priority 254 and
  sending gratuitous ARPs: did traffic stay put?).
- `both`: agents and the observer on the same nodes, the observer's scenarios; delays from the
  observer's first advert, and the owner history must show each failover once.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from services.dev.bench_harness import bench_stack
from services.dev.keepalived_failover import FailoverCluster, FailoverTiming
from services.dev.keepalived_lab import lab_unavailable_reason
from services.dev.keepalived_scenarios import (
    both_start,
    graceful_stop,
    intruder_claims,
    keepalived_killed,
    next_in_line_takes_over,
    node_killed,
    node_restarts,
    primary_preempts,
    split_brain,
    wait_holders,
)
from services.runtime.settings import Settings

Source = Literal["agent", "observer", "both"]


@dataclass
class Results:
    timings: list[FailoverTiming] = field(default_factory=list)
    # Checks that hold or not each round (the split brain, the intruder, the history).
    checks: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))

    def record(self, round_: int, timing: FailoverTiming) -> None:
        self.timings.append(timing)
        print(f"round {round_ + 1}: {timing.describe()}", flush=True)

    def check(self, round_: int, what: str, held: bool, detail: str = "") -> None:
        self.checks[what].append(held)
        print(f"round {round_ + 1}: {what}: {'held' if held else 'FAILED'} {detail}".rstrip(), flush=True)


def run_keepalived_bench(settings: Settings, rounds: int, source: Source = "agent") -> int:
    unavailable = lab_unavailable_reason()
    if unavailable is not None:
        print(f"cannot run keepalived here: {unavailable}")
        return 2
    with bench_stack(settings) as stack:
        urls = (stack.url("gateway"), stack.url("forwarder"))
        results = asyncio.run(_bench(stack.settings, *urls, stack.workdir, rounds, source))
    _print_summary(results)
    return 0 if all(all(held) for held in results.checks.values()) else 1


async def _bench(
    settings: Settings, gateway_url: str, forwarder_url: str, workdir: Path, rounds: int, source: Source
) -> Results:
    results = Results()

    def cluster(priorities: tuple[int, ...] = (100, 90)) -> FailoverCluster:
        return FailoverCluster(
            settings,
            gateway_url,
            forwarder_url,
            workdir,
            with_agents=source != "observer",
            observed=source != "agent",
            priorities=priorities,
        )

    if source == "agent":
        async with cluster() as two:
            await both_start(two)
            for round_ in range(rounds):
                for scenario in (keepalived_killed, primary_preempts, node_killed, node_restarts):
                    results.record(round_, await scenario(two))
        return results

    async with cluster() as two:
        started = time.time()
        await both_start(two)
        first_advert = await two.wait_claim("n1", since=started)
        answered = await two.watch.wait_for(two.instance_of("n1"), 30.0, since=started)
        results.record(0, FailoverTiming("both start", first_advert - started, answered - first_advert))
        for round_ in range(rounds):
            await _two_node_round(two, round_, results)
        history = await two.owner_history()
        # Per round six owner changes: SIGKILL, preemption, graceful stop (and maybe first a release
        # to nobody), preemption, node SIGKILL, return; none in the split brain; plus the start.
        expected = 1 + 6 * rounds
        results.check(
            0, "each failover once in the history", expected <= len(history) <= expected + rounds, f"{len(history)}"
        )
    async with cluster((100, 90, 80)) as three:
        await both_start(three)
        for round_ in range(rounds):
            results.record(round_, await next_in_line_takes_over(three, "n1", "n2"))
            results.record(round_, await next_in_line_takes_over(three, "n2", "n3"))
            for node in ("n2", "n1"):  # back, each preempting the one below
                three.lab.node(node).start()
                await wait_holders(three, [node])
            await three.watch.wait_for(three.instance_of("n1"), 30.0)
    async with cluster() as guarded:
        await both_start(guarded)
        for round_ in range(rounds):
            intruder, answers = await intruder_claims(guarded, hold_seconds=6.0)
            held = answers == {guarded.instance_of("n1")}
            results.check(round_, "intruder: traffic stayed on n1", held, f"{answers}")
            await asyncio.to_thread(intruder.kill)
    return results


async def _two_node_round(cluster: FailoverCluster, round_: int, results: Results) -> None:
    steps: list[Callable[[FailoverCluster], Awaitable[FailoverTiming]]] = [keepalived_killed, primary_preempts]
    for step in steps:
        results.record(round_, await step(cluster))
    answers = await split_brain(cluster, hold_seconds=4.0)
    results.check(round_, "split brain: traffic stayed on n1", answers == {cluster.instance_of("n1")}, f"{answers}")
    results.record(round_, await graceful_stop(cluster))
    results.record(round_, await primary_preempts(cluster))
    results.record(round_, await node_killed(cluster))
    results.record(round_, await node_restarts(cluster))


def _print_summary(results: Results) -> None:
    """Per scenario: keepalived's own time, and the platform's delay from what it first heard.

    A delay below zero means the forwarder answered the new master before its first advert: the
    observer still held that node's claim from its last time as master (README, "keepalived and
    nothing else", known limits). Those are counted apart, not averaged in.
    """
    by_scenario: dict[str, list[FailoverTiming]] = defaultdict(list)
    for timing in results.timings:
        by_scenario[timing.scenario].append(timing)
    print()
    header = f"{'scenario':<22} {'n':>3}  {'keepalived median/worst':>24}  {'heard -> forwarder median/p99/worst':>36}"
    print(f"{header}  ahead")
    for scenario, found in by_scenario.items():
        keepalived = [t.keepalived_seconds * 1000 for t in found]
        platform = sorted(t.platform_seconds * 1000 for t in found if t.platform_seconds >= 0)
        ahead = sum(1 for t in found if t.platform_seconds < 0)
        print(
            f"{scenario:<22} {len(found):>3}  {statistics.median(keepalived):>12.0f} / {max(keepalived):>5.0f} ms"
            f"  {_spread(platform):>36}  {ahead:>5}"
        )
    takeovers = sorted(
        t.platform_seconds * 1000 for t in results.timings if t.scenario != "graceful stop" and t.platform_seconds >= 0
    )
    print(f"{'all takeovers':<22} {len(takeovers):>3}  {'':>24}  {_spread(takeovers):>36}")
    for what, held in results.checks.items():
        print(f"{what}: held {sum(held)} of {len(held)}")


def _spread(values: list[float]) -> str:
    """median / p99 / worst of sorted values, in ms."""
    if not values:
        return "-"
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return f"{statistics.median(values):.0f} / {p99:.0f} / {values[-1]:.0f} ms"
