"""keepalived and nothing else: `havip observe` on the host sees the adverts and moves the traffic.

The lab's hub namespace plays the hypervisor host; each keepalived node is an instance whose
port is its veth's end on the hub's bridge, and the observer watches those ports. No agent
runs (but in the last test, where agent and observer run together). Every scenario is checked
against the ground truth (`ip addr` in the nodes' namespaces), and prints the delay from the
frame the observer saw to the forwarder's new answer beside keepalived's own time (-s).
Bounds are generous: the numbers are measured by `havip bench keepalived --observe`.

These need root and keepalived; under CI=true they fail instead of skipping.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import topics
from schemas.errors import ErrorCode
from services.dev.benchkit import metric_sum
from services.dev.keepalived_failover import FailoverCluster
from services.dev.keepalived_lab import NodeOptions
from services.dev.keepalived_scenarios import (
    both_start,
    graceful_stop,
    intruder_claims,
    keepalived_killed,
    next_in_line_takes_over,
    node_killed,
    primary_preempts,
    split_brain,
)
from services.runtime.settings import Settings
from tests.kafka_tools import read_topic
from tests.keepalived_tools import cluster as new_cluster
from tests.keepalived_tools import platform, skip_without_lab

pytestmark = pytest.mark.integration

skip_without_lab()

__all__ = ["platform"]  # the module's fixture: the four services as processes


async def owners(cluster: FailoverCluster) -> list[str | None]:
    """The owner after each change in the HAVIP's history, oldest first, as lab node names."""
    return [node for node, _ in await _history(cluster)]


async def _history(cluster: FailoverCluster) -> list[tuple[str | None, dict[str, object]]]:
    names = {instance: node for node, instance in cluster.instances.items()}
    return [(names.get(str(change["instance_id"])), change) for change in await cluster.owner_history()]


async def assert_owners(cluster: FailoverCluster, expected: list[str], releases: int) -> None:
    """The history went through `expected` owners in order, with no change in between but at most
    `releases` to nobody: a graceful stop releases at once, and the backup's claim follows a moment
    later (or came first, if its last advert was still recent enough to count)."""
    named = await _history(cluster)
    history = [node for node, _ in named]
    # The whole record when it fails: who, when, why and from which source, not names alone.
    told = "\n".join(f"{node}: {change}" for node, change in named)
    assert [owner for owner in history if owner is not None] == expected, told
    assert len(history) - len(expected) <= releases, told


async def test_the_six_failovers_on_keepalived_alone(platform: Settings, workdir: Path) -> None:
    async with new_cluster(platform, workdir, with_agents=False, observed=True) as cluster:
        assert cluster.agents == {}
        # 1. Both start: the priority-100 node owns it.
        started = await both_start(cluster)
        print(f"\n1. both start: forwarder answers n1 {started:.2f} s after keepalived started")
        # 2. SIGKILL of n1's keepalived: its adverts stop; n2 takes over once keepalived notices.
        killed = await keepalived_killed(cluster)
        print(f"2. {killed.describe()}")
        assert cluster.watch.current == cluster.instance_of("n2")
        # 3. n1 comes back and preempts.
        preempted = await primary_preempts(cluster)
        print(f"3. {preempted.describe()}")
        assert cluster.watch.current == cluster.instance_of("n1")
        # 4. Split brain: both advertise, both hold the VIP; traffic stays on priority 100 throughout.
        answers = await split_brain(cluster)
        print(f"4. split brain and heal: the forwarder answered {answers}")
        assert answers == {cluster.instance_of("n1")}
        # 5. Graceful stop: a priority-0 advert releases at once; n2 takes over.
        stopped = await graceful_stop(cluster)
        print(f"5. {stopped.describe()}")
        assert cluster.watch.current == cluster.instance_of("n2")
        await primary_preempts(cluster)
        # 6. SIGKILL of the whole node.
        whole = await node_killed(cluster)
        print(f"6. {whole.describe()}")
        assert cluster.watch.current == cluster.instance_of("n2")
        await assert_owners(cluster, ["n1", "n2", "n1", "n2", "n1", "n2"], releases=1)


async def test_three_nodes_traffic_follows_the_highest_live_node(platform: Settings, workdir: Path) -> None:
    async with new_cluster(platform, workdir, with_agents=False, observed=True, priorities=(100, 90, 80)) as cluster:
        await both_start(cluster)
        first = await next_in_line_takes_over(cluster, "n1", "n2")
        print(f"\n7a. {first.describe()}")
        assert cluster.watch.current == cluster.instance_of("n2")
        second = await next_in_line_takes_over(cluster, "n2", "n3")
        print(f"7b. {second.describe()}")
        assert cluster.watch.current == cluster.instance_of("n3")
        assert await owners(cluster) == ["n1", "n2", "n3"]


async def test_an_intruder_moves_nothing_and_is_recorded(platform: Settings, workdir: Path) -> None:
    async with new_cluster(platform, workdir, with_agents=False, observed=True) as cluster:
        await both_start(cluster)
        node, answers = await intruder_claims(cluster)
        intruder = cluster.instance_of(node.name)
        print(f"\n8. an intruder at priority 254: the forwarder answered {answers}")
        assert answers == {cluster.instance_of("n1")}
        assert await owners(cluster) == ["n1"]
        assert cluster.observer is not None
        metrics = await cluster.observer.metrics()
        for kind in ("vrrp", "garp"):
            counted = metric_sum(metrics, "havip_observe_unexpected_claims_total", kind=kind)
            assert counted >= 2, f"every {kind} frame of it is counted"
        letters = await read_topic(platform, topics.DEAD_LETTERS, until=100_000, timeout=3)
        mine = [
            letter for letter in letters if letter.code == ErrorCode.UNEXPECTED_CLAIMANT and intruder in letter.reason
        ]
        assert mine, "an operator sees who claimed what"
        assert all(letter.source_topic == f"observe:{cluster.host_id}" for letter in mine)
        reasons = " ".join(letter.reason for letter in mine)
        assert "VRRPv2 advert (VRID" in reasons and "gratuitous ARP" in reasons and "not attached" in reasons


async def test_use_vmac_works_because_the_port_decides(platform: Settings, workdir: Path) -> None:
    # keepalived sends from 00:00:5e:00:01:VRID on a macvlan of its own: the frame's MAC is nobody's
    # in the inventory, and it does not matter. The port the frame arrived on says who sent it.
    options = NodeOptions(extra_instance="use_vmac")
    async with new_cluster(platform, workdir, with_agents=False, observed=True, options=options) as cluster:
        await both_start(cluster)
        killed = await keepalived_killed(cluster)
        print(f"\nuse_vmac: {killed.describe()}")
        assert cluster.watch.current == cluster.instance_of("n2")
        await assert_owners(cluster, ["n1", "n2"], releases=0)


async def test_agent_and_observer_together_change_nothing_more(platform: Settings, workdir: Path) -> None:
    async with new_cluster(platform, workdir, with_agents=True, observed=True) as cluster:
        await both_start(cluster)
        killed = await keepalived_killed(cluster)
        print(f"\n9. with both: {killed.describe()}")
        await primary_preempts(cluster)
        answers = await split_brain(cluster)
        assert answers == {cluster.instance_of("n1")}
        stopped = await graceful_stop(cluster)
        print(f"9. with both: {stopped.describe()}")
        await primary_preempts(cluster)
        await node_killed(cluster)
        assert cluster.watch.current == cluster.instance_of("n2")
        # Each failover once, as with either source alone: heard twice, an instance counts once.
        await assert_owners(cluster, ["n1", "n2", "n1", "n2", "n1", "n2"], releases=1)
