"""Mapping against a real broker and PostgreSQL, with quota and forwarder as processes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from schemas import topics
from schemas.errors import ErrorCode
from schemas.messages import DetachHaVip, InstanceStatus, VrrpState
from services.dev.processes import ServiceProcess
from services.readmodel.mappings import load_mappings
from services.runtime.settings import Settings
from tests.inventory_tools import TENANT, Publisher, instance
from tests.kafka_tools import read_topic
from tests.mapping_tools import build_havips, member, report, route

pytestmark = pytest.mark.integration


async def test_sigkill_mid_stream_leaves_postgres_and_forwarder_agreeing(
    settings: Settings, db: asyncpg.Pool, start_service: Callable[..., ServiceProcess]
) -> None:
    havips, per_havip, rounds = 8, 2, 30
    start_service("quota")
    mapping = start_service("mapping")
    forwarder = start_service("forwarder")
    expected: dict[str, str] = {}
    async with Publisher(settings) as publish:
        await build_havips(publish, settings, havips, per_havip)
        # Each round is a clean failover: the old master steps down, the other takes over.
        for r in range(rounds):
            if r == rounds // 2:
                mapping.kill()  # mid-stream, no shutdown hooks, offsets uncommitted
            if r == rounds // 2 + 5:
                mapping = start_service("mapping", wait=False)
            for h in range(havips):
                new, old = member(h, r % per_havip, per_havip), member(h, (r + 1) % per_havip, per_havip)
                await publish.send(topics.VRRP, f"havip-{h}", report(f"havip-{h}", old, VrrpState.BACKUP, seq=r + 1))
                await publish.send(topics.VRRP, f"havip-{h}", report(f"havip-{h}", new, VrrpState.MASTER, seq=r + 1))
                expected[f"havip-{h}"] = new
    mapping.wait_ready()

    # Quiescence: every member's last report (seq == rounds) is in Postgres.
    deadline = asyncio.get_running_loop().time() + 90
    while await db.fetchval("SELECT count(*) FROM vrrp_reports WHERE seq = $1", rounds) < havips * per_havip:
        assert asyncio.get_running_loop().time() < deadline, "mapping never caught up after the restart"
        await asyncio.sleep(0.2)
    in_db = {m.havip_id: m for m in await load_mappings(db)}
    assert {h: m.owner.instance_id if m.owner else None for h, m in in_db.items()} == expected
    # Create + two attaches, the first MASTER, then two changes per failover. Replays
    # of what the killed worker had applied but not committed must not count again.
    assert {m.version for m in in_db.values()} == {3 + 1 + 2 * (rounds - 1)}

    async with httpx.AsyncClient(base_url=forwarder.url) as client:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            answers = {h: await route(client, m.ip_address) for h, m in in_db.items()}
            agreed = {h: (m.owner.instance_id if m.owner else None, m.version) for h, m in in_db.items()}
            if answers == agreed or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
    assert answers == agreed
    causes = {row["cause"] for row in await db.fetch("SELECT DISTINCT cause FROM owner_changes")}
    assert causes == {"MasterReported", "OwnerReleased"}


async def test_reports_follow_the_owner_rules_end_to_end(
    settings: Settings, db: asyncpg.Pool, start_service: Callable[..., ServiceProcess]
) -> None:
    start_service("quota")
    start_service("mapping")
    async with Publisher(settings) as publish:
        await build_havips(publish, settings, havips=1, per_havip=2)
        claimed = report("havip-0", "i-0", VrrpState.MASTER, seq=1)
        await publish.send(topics.VRRP, "havip-0", claimed)
        # A stranger may not own it: dead-lettered, nothing changes.
        await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-99", VrrpState.MASTER, seq=1))
        # Garbage on the topic is kept, with the reason; the consumer goes on.
        await publish.send(topics.VRRP, "havip-0", b'{"type": "VrrpReported", "state": "MASTER"}')
        # Split brain: i-1 claims MASTER too, with a higher priority, and wins.
        outranked = report("havip-0", "i-1", VrrpState.MASTER, seq=1, priority=200)
        await publish.send(topics.VRRP, "havip-0", outranked)
        # A replay of i-0's old report changes nothing.
        await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-0", VrrpState.MASTER, seq=1))
        # Owner stops: i-0 still claims MASTER, so it takes over.
        stopped = report("havip-0", "i-1", VrrpState.STOP, seq=2, priority=200)
        await publish.send(topics.VRRP, "havip-0", stopped)
    letters = await read_topic(settings, topics.DEAD_LETTERS, until=2, timeout=30)
    assert sorted(letter.code for letter in letters) == sorted(
        [ErrorCode.REPORTER_NOT_ATTACHED, ErrorCode.MALFORMED_MESSAGE]
    )
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        history = await db.fetch("SELECT previous_instance_id, instance_id, cause FROM owner_changes ORDER BY id")
        if len(history) >= 3:
            break
        await asyncio.sleep(0.2)
    assert [tuple(row) for row in history] == [
        (None, "i-0", "MasterReported"),
        ("i-0", "i-1", "HigherPriorityClaim"),
        ("i-1", "i-0", "Takeover"),
    ]
    # Each state a report changed says when the gateway accepted that report (the forwarder's
    # convergence histogram starts there); the create and the two attaches carry none. Changes
    # applied in one batch are published once, as the last one left the HAVIP.
    final = await db.fetchval("SELECT version FROM havips WHERE havip_id = 'havip-0'")
    states = await read_topic(settings, topics.MAPPINGS, until=4, timeout=30)
    while states[-1].version < final:
        assert len(states) < 8, f"the final version {final} was never published: {states}"
        states = await read_topic(settings, topics.MAPPINGS, until=len(states) + 1, timeout=10)
    caused = [s.report_received_at for s in states if s.report_received_at is not None]
    assert caused[-1] == stopped.received_at
    assert set(caused) <= {claimed.received_at, outranked.received_at, stopped.received_at}
    assert all(s.report_received_at is None for s in states[:3])


async def test_stopped_moved_and_detached_owners(
    settings: Settings, db: asyncpg.Pool, start_service: Callable[..., ServiceProcess]
) -> None:
    """Ownership also follows the platform: a stopped owner loses the HAVIP, a moved one moves its route."""
    start_service("quota")
    start_service("mapping")

    async def history_reaches(n: int) -> list[tuple[str | None, str | None, str]]:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            rows = await db.fetch("SELECT previous_instance_id, instance_id, cause FROM owner_changes ORDER BY id")
            if len(rows) >= n or asyncio.get_running_loop().time() > deadline:
                return [tuple(row) for row in rows]
            await asyncio.sleep(0.1)

    async with Publisher(settings) as publish:
        await build_havips(publish, settings, havips=1, per_havip=2)
        await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-0", VrrpState.MASTER, seq=1))
        await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-1", VrrpState.BACKUP, seq=1))
        assert len(await history_reaches(1)) == 1
        await publish.inventory([instance(0, status=InstanceStatus.STOPPED, revision=2)])
        assert (await history_reaches(2))[-1] == ("i-0", None, "OwnerInstanceUnavailable")

        await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-1", VrrpState.MASTER, seq=2))
        assert (await history_reaches(3))[-1] == (None, "i-1", "MasterReported")
        version = await db.fetchval("SELECT version FROM havips WHERE havip_id = 'havip-0'")
        # A live migration: same owner, new host; the published route must follow.
        await publish.inventory([instance(1, host="host-9", revision=2)])
        deadline = asyncio.get_running_loop().time() + 30
        while getattr((await load_mappings(db))[0].owner, "host_id", None) != "host-9":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        assert await db.fetchval("SELECT version FROM havips WHERE havip_id = 'havip-0'") == version + 1
        # An older revision of the inventory changes nothing.
        await publish.inventory([instance(1, host="host-old", revision=1)])

        await publish.send(
            topics.COMMANDS,
            "havip-0",
            DetachHaVip(command_id="detach-1", tenant_id=TENANT, havip_id="havip-0", target_id="i-1"),
        )
        assert (await history_reaches(4))[-1] == ("i-1", None, "OwnerDetached")
    published = await read_topic(settings, topics.MAPPINGS, until=100, timeout=3)
    last = [m for m in published if m.havip_id == "havip-0"][-1]
    assert last.owner is None and [a.instance_id for a in last.attachments] == ["i-0"]
    assert all(m.owner is None or m.owner.host_id != "host-old" for m in published)


async def _history(db: asyncpg.Pool) -> list[tuple[str | None, str | None, str, str]]:
    rows = await db.fetch(
        "SELECT previous_instance_id, instance_id, cause, trigger_kind FROM owner_changes ORDER BY id"
    )
    return [tuple(row) for row in rows]


async def _changed(db: asyncpg.Pool) -> bool:
    return bool(await db.fetchval("SELECT count(*) > 1 FROM owner_changes"))


async def _eventually(check: Callable[[], Awaitable[object]], timeout: float = 30.0) -> object:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_renewals_change_nothing_and_a_lapsed_owner_hands_over_at_once(
    settings: Settings, db: asyncpg.Pool, start_service: Callable[..., ServiceProcess]
) -> None:
    start_service("quota")
    start_service("mapping")
    lease = 2.5
    async with Publisher(settings) as publish:
        await build_havips(publish, settings, havips=1, per_havip=2)
        # A split brain: both claim MASTER with leases; the higher priority owns it.
        await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-0", VrrpState.MASTER, 1, 100, lease))
        await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-1", VrrpState.MASTER, 1, 90, lease))
        assert await _eventually(lambda: db.fetchval("SELECT count(*) FROM vrrp_reports WHERE seq = 1"))
        assert await _history(db) == [(None, "i-0", "MasterReported", "VrrpReport")]
        version = await db.fetchval("SELECT version FROM havips")

        # Both agents renew every 0.5 s for 3 s: nothing changes, nothing is published.
        for seq in range(2, 8):
            await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-0", VrrpState.MASTER, seq, 100, lease))
            await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-1", VrrpState.MASTER, seq, 90, lease))
            await asyncio.sleep(0.5)
        assert await _eventually(lambda: db.fetchval("SELECT count(*) = 2 FROM vrrp_reports WHERE seq = 7"))
        assert await db.fetchval("SELECT version FROM havips") == version
        assert len(await _history(db)) == 1

        # i-0's keepalived dies: its renewals stop. i-1 renews once more, with a longer
        # lease, and then stays quiet: once i-0's lease runs out the owner changes
        # without waiting for any other message.
        await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-1", VrrpState.MASTER, 8, 90, 10.0))
        await _eventually(lambda: _changed(db), timeout=10)
        changes = await _history(db)
        assert changes[1:] == [("i-0", "i-1", "OwnerClaimLapsed", "LeaseExpiry")]
        delay = await db.fetchval(
            "SELECT extract(epoch FROM changed_at - lease_expired_at) FROM owner_changes ORDER BY id DESC LIMIT 1"
        )
        print(f"owner changed {float(delay) * 1000:.0f} ms after i-0's lease ran out")
    published = await read_topic(settings, topics.MAPPINGS, until=100, timeout=3)
    owners = [m.owner.instance_id if m.owner else None for m in published if m.havip_id == "havip-0"]
    # Create, two attaches, the first owner and the lapse: renewals published nothing.
    assert owners[-2:] == ["i-0", "i-1"] and len(owners) == 5, owners


async def test_a_mapping_worker_killed_mid_split_brain_loses_no_lease(
    settings: Settings, db: asyncpg.Pool, start_service: Callable[..., ServiceProcess]
) -> None:
    start_service("quota")
    mapping = start_service("mapping")
    lease = 2.5
    async with Publisher(settings) as publish:
        await build_havips(publish, settings, havips=1, per_havip=2)
        seq = 0

        async def renew_both() -> None:
            nonlocal seq
            seq += 1
            await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-0", VrrpState.MASTER, seq, 100, lease))
            await publish.send(topics.VRRP, "havip-0", report("havip-0", "i-1", VrrpState.MASTER, seq, 90, lease))

        await renew_both()
        assert await _eventually(lambda: db.fetchval("SELECT count(*) = 2 FROM vrrp_reports WHERE seq = 1"))
        # SIGKILL while both renew every 0.5 s; the restarted worker finds every lease.
        for round_ in range(24):
            if round_ == 4:
                mapping.kill()
            if round_ == 10:
                mapping = start_service("mapping", wait=False)
            await renew_both()
            await asyncio.sleep(0.5)
        mapping.wait_ready()
        assert await _eventually(lambda: db.fetchval("SELECT count(*) = 2 FROM vrrp_reports WHERE seq = $1", seq))
        await asyncio.sleep(lease)  # a sweep that would lapse i-0 wrongly has had its chance
    assert await _history(db) == [(None, "i-0", "MasterReported", "VrrpReport")]
