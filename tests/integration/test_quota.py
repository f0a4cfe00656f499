"""Quota against a real broker and PostgreSQL: limits hold under races.

The rules themselves are tested on the in-memory store (tests/unit/test_quota_ledger.py); here
only what PostgreSQL's locks and two worker processes make of them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import asyncpg
import pytest

from schemas import topics
from schemas.errors import ErrorCode
from schemas.messages import AttachHaVip, AttachmentAccepted, CommandRejected, CreateHaVip, HaVipCreationAccepted
from services.dev.processes import ServiceProcess
from services.quota.ledger import QuotaLedger
from services.quota.postgres_store import PostgresLedgerStore
from services.quota.rules import Limits
from services.runtime.inventory import record_inventory
from services.runtime.settings import Settings
from tests.inventory_tools import TENANT, Publisher, inventory
from tests.kafka_tools import read_topic

pytestmark = pytest.mark.integration


async def _seed_inventory(db: asyncpg.Pool, instances: int) -> None:
    async with db.acquire() as conn:
        for change in inventory(instances):
            await record_inventory(conn, change, "quota")  # type: ignore[arg-type]  # inventory(): records only


async def _create(ledger: QuotaLedger, n: int) -> None:
    decision = await ledger.decide(
        CreateHaVip(command_id=f"create-{n}", tenant_id=TENANT, havip_id=f"havip-{n}", vswitch_id="vsw-a")
    )
    assert isinstance(decision, HaVipCreationAccepted), decision


async def test_30_havips_racing_for_one_instance_leave_exactly_5(db: asyncpg.Pool) -> None:
    await _seed_inventory(db, instances=1)
    ledger = QuotaLedger(PostgresLedgerStore(db), Limits())
    for n in range(30):
        await _create(ledger, n)
    decisions = await asyncio.gather(
        *(
            QuotaLedger(PostgresLedgerStore(db), Limits()).decide(
                AttachHaVip(command_id=f"attach-{n}", tenant_id=TENANT, havip_id=f"havip-{n}", target_id="i-0")
            )
            for n in range(30)
        )
    )
    outcomes = Counter(d.code if isinstance(d, CommandRejected) else "accepted" for d in decisions)
    assert outcomes == {"accepted": 5, ErrorCode.QUOTA_INSTANCE_HAVIP: 25}
    assert await db.fetchval("SELECT count(*) FROM quota_attachments WHERE instance_id = 'i-0'") == 5


async def test_15_instances_racing_for_one_havip_leave_exactly_10(db: asyncpg.Pool) -> None:
    await _seed_inventory(db, instances=15)
    ledger = QuotaLedger(PostgresLedgerStore(db), Limits())
    await _create(ledger, 0)
    decisions = await asyncio.gather(
        *(
            QuotaLedger(PostgresLedgerStore(db), Limits()).decide(
                AttachHaVip(command_id=f"attach-{n}", tenant_id=TENANT, havip_id="havip-0", target_id=f"i-{n}")
            )
            for n in range(15)
        )
    )
    outcomes = Counter(d.code if isinstance(d, CommandRejected) else "accepted" for d in decisions)
    assert outcomes == {"accepted": 10, ErrorCode.QUOTA_HAVIP_ASSOCIATION: 5}


async def test_two_creates_never_get_the_same_address(db: asyncpg.Pool) -> None:
    await _seed_inventory(db, instances=3)
    decisions = await asyncio.gather(
        *(
            QuotaLedger(PostgresLedgerStore(db), Limits()).decide(
                CreateHaVip(command_id=f"c-{n}", tenant_id=TENANT, havip_id=f"h-{n}", vswitch_id="vsw-a")
            )
            for n in range(20)
        )
    )
    addresses = [d.ip_address for d in decisions if isinstance(d, HaVipCreationAccepted)]
    assert len(addresses) == 20 == len(set(addresses))
    assert not {"10.1.0.100", "10.1.0.101", "10.1.0.102", "10.1.0.0", "10.1.0.1"} & set(addresses)


async def test_two_quota_workers_racing_attachments_for_one_instance(
    settings: Settings, start_service: Callable[..., ServiceProcess]
) -> None:
    """30 HAVIPs on all partitions, two worker processes: still exactly 5 attachments."""
    async with Publisher(settings) as publish:
        await publish.inventory(inventory(instances=1))
        for n in range(30):
            await publish.send(
                topics.COMMANDS,
                f"havip-{n}",
                CreateHaVip(command_id=f"create-{n}", tenant_id=TENANT, havip_id=f"havip-{n}", vswitch_id="vsw-a"),
            )
        start_service("quota", wait=False)
        start_service("quota", wait=False)
        await asyncio.sleep(0)
        for n in range(30):
            await publish.send(
                topics.COMMANDS,
                f"havip-{n}",
                AttachHaVip(command_id=f"attach-{n}", tenant_id=TENANT, havip_id=f"havip-{n}", target_id="i-0"),
            )
    accepted = await read_topic(settings, topics.ACCEPTED, until=35, timeout=90)
    rejected = await read_topic(settings, topics.RESULTS, until=25, timeout=30)
    attached = {a.havip_id for a in accepted if isinstance(a, AttachmentAccepted)}
    assert len(attached) == 5
    assert sum(isinstance(a, HaVipCreationAccepted) for a in accepted) == 30
    codes = Counter(r.code for r in rejected if isinstance(r, CommandRejected))
    assert codes == {ErrorCode.QUOTA_INSTANCE_HAVIP: 25}


async def test_a_command_for_an_instance_still_in_flight_is_not_refused(
    settings: Settings, start_service: Callable[..., ServiceProcess]
) -> None:
    async with Publisher(settings) as publish:
        start_service("quota")
        await publish.inventory(inventory(instances=0))
        await publish.send(
            topics.COMMANDS,
            "havip-1",
            CreateHaVip(command_id="c1", tenant_id=TENANT, havip_id="havip-1", vswitch_id="vsw-a"),
        )
        # The instance and the attach arrive together, on different topics.
        await asyncio.gather(
            publish.inventory(inventory(instances=1)[1:]),
            publish.send(
                topics.COMMANDS,
                "havip-1",
                AttachHaVip(command_id="c2", tenant_id=TENANT, havip_id="havip-1", target_id="i-0"),
            ),
        )
        await publish.send(
            topics.COMMANDS,
            "havip-1",
            AttachHaVip(command_id="c3", tenant_id=TENANT, havip_id="havip-1", target_id="i-nope"),
        )
    accepted = await read_topic(settings, topics.ACCEPTED, until=2, timeout=30)
    assert [type(a).__name__ for a in accepted] == ["HaVipCreationAccepted", "AttachmentAccepted"]
    rejected = await read_topic(settings, topics.RESULTS, until=1, timeout=30)
    assert [(r.command_id, r.code) for r in rejected] == [("c3", ErrorCode.NOT_FOUND_INSTANCE)]
    letters = await read_topic(settings, topics.DEAD_LETTERS, until=1, timeout=1)
    assert letters == []
