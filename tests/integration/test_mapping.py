"""Mapping against a real broker and PostgreSQL, with quota and forwarder as processes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from schemas import topics
from schemas.errors import ErrorCode
from schemas.messages import AttachHaVip, CreateHaVip, VrrpReported, VrrpState
from services.mapping.published import load_mappings
from services.runtime.settings import Settings
from tests.inventory_tools import TENANT, Publisher, inventory
from tests.kafka_tools import read_topic

pytestmark = pytest.mark.integration


def _report(havip: str, instance: str, state: VrrpState, seq: int, priority: int = 100) -> VrrpReported:
    now = datetime.now(UTC)
    return VrrpReported(havip_id=havip, tenant_id=TENANT, instance_id=instance, state=state, priority=priority,
                        seq=seq, reported_at=now, received_at=now)


def _member(havip: int, k: int, per_havip: int) -> str:
    """Each HAVIP gets its own instances, so no instance meets its HAVIP limit."""
    return f"i-{havip * per_havip + k}"


async def _build_havips(publish: Publisher, settings: Settings, havips: int, per_havip: int) -> None:
    await publish.inventory(inventory(instances=havips * per_havip))
    for h in range(havips):
        await publish.send(topics.COMMANDS, f"havip-{h}", CreateHaVip(
            command_id=f"create-{h}", tenant_id=TENANT, havip_id=f"havip-{h}", vswitch_id="vsw-a"))
        for i in range(per_havip):
            await publish.send(topics.COMMANDS, f"havip-{h}", AttachHaVip(
                command_id=f"attach-{h}-{i}", tenant_id=TENANT, havip_id=f"havip-{h}", target_id=_member(h, i, per_havip)))
    results = await read_topic(settings, topics.RESULTS, until=havips * (1 + per_havip), timeout=90)
    assert {r.type for r in results} == {"CommandSucceeded"}, results


async def _owners_in_database(db: asyncpg.Pool) -> dict[str, tuple[str | None, str]]:
    return {m.havip_id: (m.owner.instance_id if m.owner else None, m.ip_address) for m in await load_mappings(db)}


async def _owners_in_forwarder(client: httpx.AsyncClient, havips: dict[str, tuple[str | None, str]]) -> dict[str, str | None]:
    answers = {}
    for havip_id, (_, ip) in havips.items():
        body = (await client.get("/v1/routes", params={"vpc_id": "vpc-t", "ip": ip})).json()
        answers[havip_id] = body.get("instance_id")
    return answers


async def test_sigkill_mid_stream_leaves_postgres_and_forwarder_agreeing(settings, db, start_service) -> None:  # type: ignore[no-untyped-def]
    havips, per_havip, rounds = 8, 2, 30
    start_service("quota")
    mapping = start_service("mapping")
    forwarder = start_service("forwarder")
    expected: dict[str, str] = {}
    async with Publisher(settings) as publish:
        await _build_havips(publish, settings, havips, per_havip)
        # Each round is a clean failover: the old master steps down, the other takes over.
        for r in range(rounds):
            if r == rounds // 2:
                mapping.kill()  # mid-stream, no shutdown hooks, offsets uncommitted
            if r == rounds // 2 + 5:
                mapping = start_service("mapping", wait=False)
            for h in range(havips):
                new, old = _member(h, r % per_havip, per_havip), _member(h, (r + 1) % per_havip, per_havip)
                await publish.send(topics.VRRP, f"havip-{h}", _report(f"havip-{h}", old, VrrpState.BACKUP, seq=r + 1))
                await publish.send(topics.VRRP, f"havip-{h}", _report(f"havip-{h}", new, VrrpState.MASTER, seq=r + 1))
                expected[f"havip-{h}"] = new
    mapping.wait_ready()

    async with httpx.AsyncClient(base_url=forwarder.url) as client:
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            in_db = await _owners_in_database(db)
            in_forwarder = await _owners_in_forwarder(client, in_db)
            db_owners = {h: owner for h, (owner, _) in in_db.items()}
            if (db_owners == expected and in_forwarder == expected) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
    assert db_owners == expected
    assert in_forwarder == db_owners
    # Every owner change is in the history, with its cause.
    causes = {row["cause"] for row in await db.fetch("SELECT DISTINCT cause FROM owner_changes")}
    assert causes <= {"MasterReported", "OwnerReleased", "Takeover"} and "MasterReported" in causes
    versions = await db.fetch("SELECT havip_id, version FROM havips")
    for row in versions:
        answer = await _forwarder_version(forwarder.url, in_db[row["havip_id"]][1])
        assert answer == row["version"]


async def _forwarder_version(url: str, ip: str) -> int:
    async with httpx.AsyncClient(base_url=url) as client:
        return int((await client.get("/v1/routes", params={"vpc_id": "vpc-t", "ip": ip})).json()["version"])


async def test_reports_follow_the_owner_rules_end_to_end(settings, db, start_service) -> None:  # type: ignore[no-untyped-def]
    start_service("quota")
    start_service("mapping")
    async with Publisher(settings) as publish:
        await _build_havips(publish, settings, havips=1, per_havip=2)
        await publish.send(topics.VRRP, "havip-0", _report("havip-0", "i-0", VrrpState.MASTER, seq=1))
        # A stranger may not own it: dead-lettered, nothing changes.
        await publish.send(topics.VRRP, "havip-0", _report("havip-0", "i-99", VrrpState.MASTER, seq=1))
        # Garbage on the topic is kept, with the reason; the consumer goes on.
        await publish.send(topics.VRRP, "havip-0", b'{"type": "VrrpReported", "state": "MASTER"}')
        # Split brain: i-1 claims MASTER too, with a higher priority, and wins.
        await publish.send(topics.VRRP, "havip-0", _report("havip-0", "i-1", VrrpState.MASTER, seq=1, priority=200))
        # A replay of i-0's old report changes nothing.
        await publish.send(topics.VRRP, "havip-0", _report("havip-0", "i-0", VrrpState.MASTER, seq=1))
        # Owner stops: i-0 still claims MASTER, so it takes over.
        await publish.send(topics.VRRP, "havip-0", _report("havip-0", "i-1", VrrpState.STOP, seq=2, priority=200))
    letters = await read_topic(settings, topics.DEAD_LETTERS, until=2, timeout=30)
    assert sorted(letter.code for letter in letters) == sorted([ErrorCode.REPORTER_NOT_ATTACHED, ErrorCode.MALFORMED_MESSAGE])
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        history = await db.fetch("SELECT previous_instance_id, instance_id, cause FROM owner_changes ORDER BY id")
        if len(history) >= 3:
            break
        await asyncio.sleep(0.2)
    assert [tuple(row) for row in history] == [
        (None, "i-0", "MasterReported"),
        ("i-0", "i-1", "SplitBrainResolved"),
        ("i-1", "i-0", "Takeover"),
    ]
