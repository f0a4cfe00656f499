"""The failover scenarios on real keepalived, each checked against the ground truth (`ip addr`).

Shared by the integration tests (once each) and `havip bench keepalived` (many
rounds). Every scenario returns what it measured; a failure raises with what
the forwarder answered and what each node did.
"""

from __future__ import annotations

import asyncio
import time

from services.dev.keepalived_failover import FailoverCluster, FailoverTiming
from services.dev.keepalived_lab import Node, wait_until

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
    notified = await cluster.wait_claim("n1", since=primary.started_at)
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
    await cluster.wait_claim("n2", since=began)
    await asyncio.sleep(hold_seconds)  # leases renew and lapse many times over
    cluster.lab.heal()
    await wait_holders(cluster, ["n1"])
    await asyncio.sleep(3.0)  # the lower priority's BACKUP report and any late renewal are in
    return cluster.watch.answers_between(began, time.time())


async def node_killed(cluster: FailoverCluster) -> FailoverTiming:
    """Scenario 6: SIGKILL of the whole primary node: keepalived and its agent at once."""
    if "n1" in cluster.agents:
        cluster.agents["n1"].kill()
    cluster.lab.node("n1").kill()
    return await _standby_takes_over(cluster, "whole node SIGKILL")


async def graceful_stop(cluster: FailoverCluster) -> FailoverTiming:
    """Scenario 5: keepalived on the primary stops (SIGTERM: a priority-0 advert); the backup takes over.

    Measured: keepalived's time from SIGTERM to its resignation, and the platform's from the
    resignation to the forwarder no longer answering the primary (it answers the backup, or nobody
    until the backup's first advert).
    """
    primary = cluster.lab.node("n1")
    # In a thread: stop() waits for keepalived to exit, and the forwarder's watch must go on meanwhile.
    await asyncio.to_thread(primary.stop)
    stopped_at = primary.stopped_at
    assert stopped_at is not None
    resigned = await cluster.wait_resignation("n1", since=stopped_at)
    left = await cluster.watch.wait_for_other_than(cluster.instance_of("n1"), TIMEOUT, since=stopped_at)
    await cluster.watch.wait_for(cluster.instance_of("n2"), TIMEOUT, since=stopped_at)
    await wait_holders(cluster, ["n2"])
    return FailoverTiming("graceful stop", resigned - stopped_at, left - resigned)


async def next_in_line_takes_over(cluster: FailoverCluster, killed: str, successor: str) -> FailoverTiming:
    """Scenario 7: SIGKILL of `killed`'s keepalived; the highest live node left (`successor`) takes over."""
    cluster.lab.node(killed).kill()
    return await _standby_takes_over(cluster, f"{killed} SIGKILL", killed, successor)


async def _standby_takes_over(
    cluster: FailoverCluster, scenario: str, killed: str = "n1", successor: str = "n2"
) -> FailoverTiming:
    """After `killed` was killed: `successor`'s keepalived notices the missing adverts, and the forwarder follows."""
    killed_at = cluster.lab.node(killed).killed_at
    assert killed_at is not None
    notified = await cluster.wait_claim(successor, since=killed_at)
    answered = await cluster.watch.wait_for(cluster.instance_of(successor), TIMEOUT, since=killed_at)
    await wait_holders(cluster, [successor])
    return FailoverTiming(scenario, notified - killed_at, answered - notified)


async def node_restarts(cluster: FailoverCluster) -> FailoverTiming:
    """The primary node comes back (agent first, as systemd would order it, then keepalived) and preempts."""
    if "n1" in cluster.agents:
        cluster.agents["n1"].start(cluster.settings)
    return await primary_preempts(cluster)


async def intruder_claims(cluster: FailoverCluster, hold_seconds: float = 8.0) -> tuple[Node, set[str | None]]:
    """Scenario 8: an instance not attached to the HAVIP runs keepalived for its VRID and address at priority
    254 (it makes itself MASTER, holds the VIP and sends gratuitous ARPs). Returns the intruder (left
    running) and every answer the forwarder gave meanwhile."""
    intruder = await cluster.add_intruder(254)
    began = time.time()
    intruder.start()
    await asyncio.to_thread(wait_until, intruder.holds_vip, TIMEOUT, 0.05, "the intruder holds the VIP")
    await asyncio.sleep(hold_seconds)  # its adverts every second, and both bursts of its GARPs (5 s apart)
    return intruder, cluster.watch.answers_between(began, time.time())
