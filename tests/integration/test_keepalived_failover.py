"""Failovers on real keepalived, followed end to end: keepalived → havip agent → gateway → mapping → forwarder.

Two keepalived 2.x nodes (priorities 100 and 90, advert_int 1, unicast peers)
in network namespaces, each with `havip agent` reading its notify FIFO, on a
control plane started as processes. Every scenario is checked against the
ground truth (which running node holds the VIP according to `ip addr`), and
prints the delay from keepalived's notify to the forwarder's new answer
beside keepalived's own time (run with -s). Bounds are generous: the numbers
are measured by `havip bench keepalived`, never asserted.

These need root and keepalived. CI runs as root and installs keepalived
(.ci/run), so under CI=true they fail instead of skipping.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from schemas import topics
from schemas.messages import VrrpState
from services.dev.keepalived_failover import FailoverCluster
from services.dev.keepalived_scenarios import (
    TIMEOUT,
    both_start,
    keepalived_killed,
    node_killed,
    primary_preempts,
    split_brain,
    wait_holders,
)
from services.runtime.settings import Settings
from tests.kafka_tools import read_topic
from tests.keepalived_tools import cluster as new_cluster
from tests.keepalived_tools import platform, skip_without_lab

pytestmark = pytest.mark.integration

skip_without_lab()


__all__ = ["platform"]  # the module's fixture: the four services as processes


async def _cluster(settings: Settings, workdir: Path, linked: tuple[str, ...] = ()) -> FailoverCluster:
    return new_cluster(settings, workdir, linked=linked)


async def test_start_sigkill_and_preemption_move_the_forwarder_with_keepalived(
    platform: Settings, workdir: Path
) -> None:
    async with await _cluster(platform, workdir) as cluster:
        # 1. Both start: the priority-100 node owns it.
        started = await both_start(cluster)
        print(f"\n1. both start: forwarder answers n1 {started:.2f} s after keepalived started")
        # 2. SIGKILL of n1's keepalived: n2 takes over once keepalived itself notices.
        killed = await keepalived_killed(cluster)
        print(f"2. {killed.describe()}")
        assert cluster.watch.current == cluster.instance_of("n2")
        # 3. n1 comes back and preempts: traffic moves back.
        preempted = await primary_preempts(cluster)
        print(f"3. {preempted.describe()}")
        assert cluster.watch.current == cluster.instance_of("n1")


async def test_a_split_brain_keeps_traffic_on_the_higher_priority_throughout(platform: Settings, workdir: Path) -> None:
    async with await _cluster(platform, workdir) as cluster:
        await both_start(cluster)
        answers = await split_brain(cluster)
        print(f"\n4. split brain and heal: the forwarder answered {answers}")
        # Both held the VIP for seconds; traffic never left the node keepalived keeps.
        assert answers == {cluster.instance_of("n1")}


async def test_an_agent_cut_off_from_the_gateway_loses_nothing_and_keeps_order(
    platform: Settings, workdir: Path
) -> None:
    async with await _cluster(platform, workdir, linked=("n1",)) as cluster:
        await both_start(cluster)
        primary, agent, link = cluster.lab.node("n1"), cluster.agents["n1"], cluster.links["n1"]
        cut_at = time.time()
        await link.cut()
        # A failover while n1's agent cannot reach the gateway: n1 stops (its STOP is spooled),
        # n2 takes over once n1's claim lapses (its renewals cannot get through)...
        primary.stop()
        await cluster.watch.wait_for(cluster.instance_of("n2"), TIMEOUT, since=cut_at)
        # ...then n1 starts again and preempts, still cut off: BACKUP and MASTER are spooled too.
        primary.start()
        await wait_holders(cluster, ["n1"])
        assert primary.started_at is not None
        await agent.wait_read("MASTER", since=primary.started_at)
        await asyncio.sleep(max(0.0, cut_at + 10.0 - time.time()))
        await link.restore()
        restored = time.time()
        answered = await cluster.watch.wait_for(cluster.instance_of("n1"), TIMEOUT, since=restored)
        print(f"\n5. gateway back after 10 s: forwarder answers n1 {answered - restored:.2f} s later")
        await wait_holders(cluster, ["n1"])

        published = await read_topic(platform, topics.VRRP, until=100_000, timeout=3)
        mine = [
            r for r in published if r.instance_id == cluster.instance_of("n1") and r.reported_at.timestamp() >= cut_at
        ]
        assert [r.seq for r in mine] == sorted(r.seq for r in mine), "delivered oldest first"
        states = [r.state for r in mine]
        changes = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
        assert changes[:3] == [VrrpState.STOP, VrrpState.BACKUP, VrrpState.MASTER], states
        assert agent.spooled() == [], "the spool is empty again"
        assert cluster.watch.current == cluster.instance_of("n1")


async def test_a_whole_node_killed_fails_over_after_keepalived_notices(platform: Settings, workdir: Path) -> None:
    async with await _cluster(platform, workdir) as cluster:
        await both_start(cluster)
        killed = await node_killed(cluster)
        print(f"\n6. {killed.describe()}")
        # keepalived's own detection plus the platform's delay, with room for a busy machine.
        assert killed.keepalived_seconds + killed.platform_seconds < 10.0
        assert cluster.watch.current == cluster.instance_of("n2")
