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
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from services.dev.bench_harness import bench_stack
from services.dev.benchkit import format_table, plot_latencies, spread, write_json
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


def run_keepalived_bench(settings: Settings, rounds: int, out_dir: Path, source: Source = "agent") -> int:
    unavailable = lab_unavailable_reason()
    if unavailable is not None:
        print(f"cannot run keepalived here: {unavailable}")
        return 2
    with bench_stack(settings) as stack:
        urls = (stack.url("gateway"), stack.url("forwarder"))
        results = asyncio.run(_bench(stack.settings, *urls, stack.workdir, rounds, source))
    summary = keepalived_results(results, rounds, source)
    _print_summary(summary)
    heard = {scenario: _heard_ms(found) for scenario, found in _by_scenario(results.timings).items()}
    pngs = plot_latencies(out_dir, "keepalived-heard-to-forwarder", heard)
    path = write_json(out_dir, summary)
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))
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


def keepalived_results(results: Results, rounds: int, source: Source) -> dict[str, Any]:
    """What results.json holds: per scenario keepalived's own time and the platform's delay after it, in ms.

    A delay below zero means the forwarder answered the new master before its first advert: the
    observer still held that node's claim from its last time as master (README, "keepalived and
    nothing else", known limits). Those are counted apart ("ahead"), not in the spread.
    """
    takeovers = [t for t in results.timings if t.scenario != "graceful stop"]
    return {
        "rounds": rounds,
        "source": source,
        "scenarios": {
            scenario: {
                "keepalived_ms": spread(t.keepalived_seconds * 1000 for t in found).as_dict(),
                "heard_to_forwarder_ms": _spread_ms(found),
                "ahead": sum(1 for t in found if t.platform_seconds < 0),
                "samples": [asdict(t) for t in found],
            }
            for scenario, found in _by_scenario(results.timings).items()
        },
        "all_takeovers_heard_to_forwarder_ms": _spread_ms(takeovers),
        "checks": {what: {"held": sum(held), "of": len(held)} for what, held in results.checks.items()},
    }


def _by_scenario(timings: Sequence[FailoverTiming]) -> dict[str, list[FailoverTiming]]:
    found: dict[str, list[FailoverTiming]] = defaultdict(list)
    for timing in timings:
        found[timing.scenario].append(timing)
    return found


def _heard_ms(timings: Sequence[FailoverTiming]) -> list[float]:
    """Heard -> forwarder of those not ahead of keepalived, in ms."""
    return [t.platform_seconds * 1000 for t in timings if t.platform_seconds >= 0]


def _spread_ms(timings: Sequence[FailoverTiming]) -> dict[str, float] | None:
    heard = _heard_ms(timings)
    return spread(heard).as_dict() if heard else None


def _print_summary(summary: dict[str, Any]) -> None:
    def figure(found: dict[str, float] | None, key: str) -> float | None:
        return None if found is None else found[key]

    rows: list[list[object]] = []
    for scenario, found in summary["scenarios"].items():
        ka, pf = found["keepalived_ms"], found["heard_to_forwarder_ms"]
        rows.append(
            [
                scenario,
                ka["count"],
                ka["p50"],
                ka["max"],
                *(figure(pf, k) for k in ("p50", "p99", "max")),
                found["ahead"],
            ]
        )
    every = summary["all_takeovers_heard_to_forwarder_ms"]
    rows.append(
        ["all takeovers", figure(every, "count"), None, None, *(figure(every, k) for k in ("p50", "p99", "max")), None]
    )
    headers = ["scenario", "n", "keepalived p50 ms", "worst", "heard -> forwarder p50 ms", "p99", "worst", "ahead"]
    print("\n" + format_table(headers, rows))
    for what, held in summary["checks"].items():
        print(f"{what}: held {held['held']} of {held['of']}")
