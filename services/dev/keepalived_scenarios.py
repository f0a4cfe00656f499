"""The failover scenarios on real keepalived, each checked against the ground truth (`ip addr`).

Shared by the integration tests (once each) and `havip bench keepalived` (many
rounds). Every scenario returns what it measured; a failure raises with what
the forwarder answered and what each node did.
"""

from __future__ import annotations

import asyncio
import time

from services.dev.keepalived_failover import FailoverCluster, FailoverTiming

# Generous bounds for "it happened", never for "it was fast": keepalived alone needs about 3.6 s.
TIMEOUT = 30.0


async def wait_holders(cluster: FailoverCluster, names: list[str], timeout: float = TIMEOUT) -> None:
    """Until exactly these running nodes hold the VIP (`ip addr` in their namespaces)."""
    deadline = time.monotonic() + timeout
    while sorted(await asyncio.to_thread(cluster.running_holders)) != sorted(names):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"running VIP holders {cluster.running_holders()} are not {names}\n{cluster.lab.describe()}"
            )
        await asyncio.sleep(0.05)


async def both_start(cluster: FailoverCluster) -> float:
    """Scenario 1: both nodes start; the forwarder answers the priority-100 node. Seconds until it did."""
    started = time.time()
    for node in cluster.lab.nodes:
        node.start()
    await wait_holders(cluster, ["n1"])
    answered = await cluster.watch.wait_for(cluster.instance_of("n1"), TIMEOUT, since=started)
    return answered - started


async def keepalived_killed(cluster: FailoverCluster) -> FailoverTiming:
    """Scenario 2: SIGKILL of the primary's keepalived (its agent lives on and stops renewing)."""
    cluster.lab.node("n1").kill()
    return await _standby_takes_over(cluster, "keepalived SIGKILL")


async def primary_preempts(cluster: FailoverCluster) -> FailoverTiming:
    """Scenario 3: the primary's keepalived starts again and preempts; the forwarder moves back."""
    primary = cluster.lab.node("n1")
    primary.start()
    assert primary.started_at is not None
    notified = await cluster.agents["n1"].wait_read("MASTER", since=primary.started_at)
    answered = await cluster.watch.wait_for(cluster.instance_of("n1"), TIMEOUT, since=primary.started_at)
    await wait_holders(cluster, [primary.name])
    return FailoverTiming("preemption", notified - primary.started_at, answered - notified)


async def split_brain(cluster: FailoverCluster, hold_seconds: float = 6.0) -> set[str | None]:
    """Scenario 4: the nodes stop hearing each other (both MASTER, both hold the VIP), then heal.

    Returns every answer the forwarder gave from the partition until well after the heal.
    """
    began = time.time()
    cluster.lab.partition()
    await wait_holders(cluster, ["n1", "n2"])
    await cluster.agents["n2"].wait_read("MASTER", since=began)
    await asyncio.sleep(hold_seconds)  # leases renew and lapse many times over
    cluster.lab.heal()
    await wait_holders(cluster, ["n1"])
    await asyncio.sleep(3.0)  # the lower priority's BACKUP report and any late renewal are in
    return cluster.watch.answers_between(began, time.time())


async def node_killed(cluster: FailoverCluster) -> FailoverTiming:
    """Scenario 6: SIGKILL of the whole primary node: keepalived and its agent at once."""
    cluster.agents["n1"].kill()
    cluster.lab.node("n1").kill()
    return await _standby_takes_over(cluster, "whole node SIGKILL")


async def _standby_takes_over(cluster: FailoverCluster, scenario: str) -> FailoverTiming:
    """After n1 was killed: n2's keepalived notices the missing adverts, and the forwarder follows."""
    killed_at = cluster.lab.node("n1").killed_at
    assert killed_at is not None
    notified = await cluster.agents["n2"].wait_read("MASTER", since=killed_at)
    answered = await cluster.watch.wait_for(cluster.instance_of("n2"), TIMEOUT, since=killed_at)
    await wait_holders(cluster, ["n2"])
    return FailoverTiming(scenario, notified - killed_at, answered - notified)


async def node_restarts(cluster: FailoverCluster) -> FailoverTiming:
    """The primary node comes back (agent first, as systemd would order it, then keepalived) and preempts."""
    cluster.agents["n1"].start(cluster.settings)
    return await primary_preempts(cluster)
