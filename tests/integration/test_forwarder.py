"""The forwarder against a real broker and a real PostgreSQL.

Snapshots are built by writing the mapping tables directly; changes are
published to `havip.mappings` as the mapping service would.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.structs import RecordMetadata
from fastapi import FastAPI
from prometheus_client import REGISTRY

from schemas import topics
from schemas.messages import DeadLettered, HaVipMappingChanged, HaVipStatus, Route
from services.dev.embedded import free_port
from services.dev.processes import ServiceProcess
from services.forwarder.app import create_app
from services.forwarder.follower import MappingFollower
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings
from tests.kafka_tools import read_topic

pytestmark = pytest.mark.integration

DEADLINE = 30.0
OWNER_A = Route(instance_id="i-a", private_ip="10.0.0.11", host_id="host-a")
OWNER_B = Route(instance_id="i-b", private_ip="10.0.0.12", host_id="host-b")


# --- helpers -------------------------------------------------------------------


async def insert_havip(
    db: asyncpg.Pool,
    havip_id: str,
    *,
    version: int,
    ip: str,
    vpc_id: str = "vpc-1",
    eip: str | None = None,
    owner: Route | None = None,
    attached: tuple[Route, ...] = (),
    status: str = "InUse",
) -> None:
    """A HAVIP as the mapping service stores it: rows in havips, attachments and instances."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO havips (havip_id, tenant_id, vpc_id, vswitch_id, ip_address, status,"
            " owner_target_id, version) VALUES ($1, 'tenant-1', $2, 'vsw-1', $3::inet, $4, $5, $6)",
            havip_id,
            vpc_id,
            ip,
            status,
            owner.instance_id if owner else None,
            version,
        )
        if eip is not None:
            await conn.execute(
                "INSERT INTO havip_eips (eip_id, havip_id, ip_address) VALUES ($1, $2, $3::inet)",
                f"eip-{havip_id}",
                havip_id,
                eip,
            )
        for route in {*attached, *([owner] if owner else [])}:
            await conn.execute(
                "INSERT INTO instances (instance_id, tenant_id, vpc_id, vswitch_id, private_ip, status, host_id,"
                " revision) VALUES ($1, 'tenant-1', $2, 'vsw-1', $3::inet, 'Running', $4, 1)"
                " ON CONFLICT (instance_id) DO NOTHING",
                route.instance_id,
                vpc_id,
                route.private_ip,
                route.host_id,
            )
            await conn.execute(
                "INSERT INTO attachments (havip_id, target_id, instance_id) VALUES ($1, $2, $2)",
                havip_id,
                route.instance_id,
            )


def mapping(havip_id: str, version: int, *, ip: str, owner: Route | None = None, **changes: Any) -> HaVipMappingChanged:
    fields: dict[str, Any] = dict(
        havip_id=havip_id,
        tenant_id="tenant-1",
        vpc_id="vpc-1",
        vswitch_id="vsw-1",
        ip_address=ip,
        status=HaVipStatus.IN_USE if owner else HaVipStatus.AVAILABLE,
        owner=owner,
        version=version,
    )
    fields.update(changes)
    return HaVipMappingChanged(**fields)


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self._producer = new_producer(settings)
        self.topic = topic_name(settings, topics.MAPPINGS)

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, message: HaVipMappingChanged) -> RecordMetadata:
        return await self.send_raw(message.havip_id.encode(), topics.encode(message))

    async def send_raw(self, key: bytes | None, value: bytes | None) -> RecordMetadata:
        return await self._producer.send_and_wait(self.topic, key=key, value=value)


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.02)


async def past(follower: MappingFollower, sent: RecordMetadata) -> None:
    """Wait until the follower has handled the record `sent` (and everything before it)."""
    await eventually(
        lambda: follower.positions().get(sent.partition, -1) > sent.offset,
        f"follower past partition {sent.partition} offset {sent.offset}",
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The forwarder app with its lifespan running, and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://forwarder") as client:
            yield app, client


async def ready(client: httpx.AsyncClient) -> None:
    async def check() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await eventually(check, "/readyz answers 200")


async def route_version(client: httpx.AsyncClient, ip: str, vpc_id: str = "vpc-1") -> int | None:
    answer = await client.get("/v1/routes", params={"vpc_id": vpc_id, "ip": ip})
    return answer.json()["version"] if answer.status_code == 200 else None


async def waiting_on_lock(db: asyncpg.Pool, table: str) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass", table))


# --- tests ---------------------------------------------------------------------


async def test_the_snapshot_answers_lookups_at_start(settings: Settings, db: asyncpg.Pool) -> None:
    await insert_havip(
        db, "havip-1", version=3, ip="10.0.0.100", eip="203.0.113.7", owner=OWNER_A, attached=(OWNER_A, OWNER_B)
    )
    await insert_havip(db, "havip-2", version=1, ip="10.0.0.101", attached=(OWNER_B,))
    await insert_havip(db, "havip-3", version=1, ip="10.0.0.100", vpc_id="vpc-2")

    async with running(settings) as (_, client):
        await ready(client)

        answer = await client.get("/v1/routes", params={"vpc_id": "vpc-1", "ip": "10.0.0.100"})
        assert answer.status_code == 200
        assert answer.json() == {
            "havip_id": "havip-1",
            "version": 3,
            "instance_id": "i-a",
            "eni_id": None,
            "private_ip": "10.0.0.11",
            "host_id": "host-a",
        }

        # attached but nobody MASTER: a hit with no owner, traffic is dropped
        answer = await client.get("/v1/routes", params={"vpc_id": "vpc-1", "ip": "10.0.0.101"})
        assert answer.status_code == 200
        assert answer.json() == {
            "havip_id": "havip-2",
            "version": 1,
            "instance_id": None,
            "eni_id": None,
            "private_ip": None,
            "host_id": None,
        }

        # the same IP in another VPC is another HAVIP
        answer = await client.get("/v1/routes", params={"vpc_id": "vpc-2", "ip": "10.0.0.100"})
        assert answer.json()["havip_id"] == "havip-3"

        # a public EIP resolves through its HAVIP
        answer = await client.get("/v1/routes", params={"eip": "203.0.113.7"})
        assert answer.status_code == 200
        assert answer.json()["havip_id"] == "havip-1"
        assert answer.json()["instance_id"] == "i-a"

        answer = await client.get("/v1/routes", params={"vpc_id": "vpc-1", "ip": "10.0.0.200"})
        assert answer.status_code == 404
        body = answer.json()
        assert body["code"] == "NotFound.Route"
        assert set(body) == {"code", "message", "request_id"} and body["request_id"]

        answer = await client.get("/v1/routes", params={"eip": "10.0.0.100"})  # a private IP is not an EIP
        assert answer.status_code == 404
        for incomplete in ({"ip": "203.0.113.7"}, {"vpc_id": "vpc-1", "eip": "203.0.113.7"}, {}):
            answer = await client.get("/v1/routes", params=incomplete)
            assert answer.status_code == 400 and answer.json()["code"] == "InvalidParameter", incomplete


async def test_a_newer_version_changes_the_answer_and_an_older_one_changes_nothing(
    settings: Settings, db: asyncpg.Pool
) -> None:
    await insert_havip(db, "havip-1", version=2, ip="10.0.0.100", owner=OWNER_A, attached=(OWNER_A, OWNER_B))

    async with running(settings) as (app, client), Publisher(settings) as publisher:
        await ready(client)
        follower: MappingFollower = app.state.follower
        assert await route_version(client, "10.0.0.100") == 2

        await publisher.send(mapping("havip-1", 3, ip="10.0.0.100", owner=OWNER_B))
        await eventually(lambda: _is(client, "10.0.0.100", 3), "version 3 answers")
        answer = (await client.get("/v1/routes", params={"vpc_id": "vpc-1", "ip": "10.0.0.100"})).json()
        assert (answer["instance_id"], answer["host_id"]) == ("i-b", "host-b")

        # older than what the table holds, and a replay of the snapshot's version: both ignored
        await publisher.send(mapping("havip-1", 2, ip="10.0.0.100", owner=OWNER_A))
        sent = await publisher.send(mapping("havip-1", 3, ip="10.0.0.100", owner=OWNER_A))
        await past(follower, sent)
        answer = (await client.get("/v1/routes", params={"vpc_id": "vpc-1", "ip": "10.0.0.100"})).json()
        assert (answer["version"], answer["instance_id"]) == (3, "i-b")

        # an IP change moves the HAVIP; a delete takes it away
        await publisher.send(mapping("havip-1", 4, ip="10.0.0.150", owner=OWNER_B))
        await eventually(lambda: _is(client, "10.0.0.150", 4), "the new address answers")
        assert await route_version(client, "10.0.0.100") is None
        sent = await publisher.send(mapping("havip-1", 5, ip="10.0.0.150", status=HaVipStatus.DELETED))
        await past(follower, sent)
        assert await route_version(client, "10.0.0.150") is None


async def _is(client: httpx.AsyncClient, ip: str, version: int) -> bool:
    return await route_version(client, ip) == version


async def test_a_change_published_while_the_snapshot_loads_is_not_lost(settings: Settings, db: asyncpg.Pool) -> None:
    """The end offsets are read before the snapshot: a change the snapshot misses is on the stream.

    The test holds the snapshot query on a table lock, publishes a version the
    snapshot will not contain, then lets the snapshot through. Had the follower
    read the end offsets after the snapshot, it would seek past that record.
    """
    await insert_havip(db, "havip-1", version=1, ip="10.0.0.100", attached=(OWNER_A,))
    # published before the forwarder starts, and already in the snapshot
    async with Publisher(settings) as publisher:
        await publisher.send(mapping("havip-1", 1, ip="10.0.0.100"))

        async with db.acquire() as blocker:
            lock = blocker.transaction()
            await lock.start()
            await blocker.execute("LOCK TABLE havips IN ACCESS EXCLUSIVE MODE")
            follower = MappingFollower(settings, db, retry_seconds=0.2)
            follower.start()
            try:
                await eventually(lambda: waiting_on_lock(db, "havips"), "the snapshot query waits on the lock")
                assert not follower.caught_up
                await publisher.send(mapping("havip-1", 2, ip="10.0.0.100", owner=OWNER_A))
                await lock.rollback()  # the snapshot now reads version 1, older than the record

                await eventually(lambda: follower.caught_up, "caught up")
                await eventually(
                    lambda: (a := follower.table.lookup("vpc-1", "10.0.0.100")) is not None and a.version == 2,
                    "version 2 from the stream",
                )
                answer = follower.table.lookup("vpc-1", "10.0.0.100")
                assert answer is not None and answer.owner == OWNER_A
            finally:
                await follower.stop()


async def test_records_published_before_start_are_covered_by_the_snapshot(settings: Settings, db: asyncpg.Pool) -> None:
    # The mapping service publishes after committing, so what is on the topic
    # before start is in the database too; the follower starts at the end of
    # the topic and does not replay it.
    await insert_havip(db, "havip-1", version=3, ip="10.0.0.100", owner=OWNER_B, attached=(OWNER_A, OWNER_B))
    async with Publisher(settings) as publisher:
        for version, owner in ((1, None), (2, OWNER_A), (3, OWNER_B)):
            await publisher.send(mapping("havip-1", version, ip="10.0.0.100", owner=owner))
        follower = MappingFollower(settings, db)
        follower.start()
        try:
            await eventually(lambda: follower.caught_up, "caught up")
            answer = follower.table.lookup("vpc-1", "10.0.0.100")
            assert answer is not None and (answer.version, answer.owner) == (3, OWNER_B)
            assert sum(follower.positions().values()) == 3  # it starts after the three records
        finally:
            await follower.stop()


async def test_a_garbage_record_is_dead_lettered_and_later_records_still_apply(
    settings: Settings, db: asyncpg.Pool
) -> None:
    await insert_havip(db, "havip-1", version=1, ip="10.0.0.100", attached=(OWNER_A,))
    follower = MappingFollower(settings, db)
    follower.start()
    try:
        await eventually(lambda: follower.caught_up, "caught up")
        async with Publisher(settings) as publisher:
            await publisher.send_raw(b"havip-1", b"{not json")
            await publisher.send_raw(b"havip-1", b'{"type": "HaVipMappingChanged", "havip_id": "havip-1"}')
            wrong_key = mapping("havip-9", 1, ip="10.0.0.109")
            await publisher.send_raw(b"havip-1", topics.encode(wrong_key))
            await publisher.send_raw(b"havip-1", None)  # a tombstone: nothing to order it by, ignored
            sent = await publisher.send(mapping("havip-1", 2, ip="10.0.0.100", owner=OWNER_A))
            await past(follower, sent)

        answer = follower.table.lookup("vpc-1", "10.0.0.100")
        assert answer is not None and (answer.version, answer.owner) == (2, OWNER_A)
        assert follower.table.lookup("vpc-1", "10.0.0.109") is None

        letters: list[DeadLettered] = await read_topic(settings, topics.DEAD_LETTERS, until=3)
        assert len(letters) == 3
        assert {letter.code for letter in letters} == {"MalformedMessage"}
        assert {letter.consumer for letter in letters} == {"forwarder"}
        assert {letter.source_topic for letter in letters} == {topic_name(settings, topics.MAPPINGS)}
        by_text = {letter.original_value_text: letter for letter in letters}
        assert "{not json" in by_text
        assert "not the havip_id" in by_text[topics.encode(wrong_key).decode()].reason
        assert all(letter.original_key_b64 == "aGF2aXAtMQ==" for letter in letters)  # b"havip-1"
    finally:
        await follower.stop()


async def test_readiness_flips_only_when_caught_up(settings: Settings, db: asyncpg.Pool) -> None:
    await insert_havip(db, "havip-1", version=1, ip="10.0.0.100", owner=OWNER_A, attached=(OWNER_A,))
    async with db.acquire() as blocker:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE havips IN ACCESS EXCLUSIVE MODE")
        async with running(settings) as (_, client):
            await eventually(lambda: waiting_on_lock(db, "havips"), "the snapshot query waits on the lock")

            async def only_the_snapshot_is_missing() -> bool:
                # The broker watch's first look may still be under way: it is not what this test is about.
                answer = await client.get("/readyz")
                assert answer.status_code == 503
                return bool(answer.json()["reasons"] == {"caught up": "loading the snapshot"})

            await eventually(only_the_snapshot_is_missing, "unready only while the snapshot loads")
            assert (await client.get("/healthz")).status_code == 200  # alive all the same
            assert await route_version(client, "10.0.0.100") is None

            await lock.rollback()
            await ready(client)
            assert await route_version(client, "10.0.0.100") == 1
            metrics = (await client.get("/metrics")).text
            assert "havip_forwarder_records_applied_total" in metrics
            assert "havip_forwarder_caught_up 1.0" in metrics


async def test_bad_requests_answer_invalid_parameter(settings: Settings, db: asyncpg.Pool) -> None:
    async with running(settings) as (_, client):
        await ready(client)
        for params in (
            {"vpc_id": "vpc-1", "ip": "10.0.0.300"},
            {"vpc_id": "vpc-1", "ip": "fe80::1"},
            {"vpc_id": "vpc-1", "ip": "010.0.0.1"},
            {"vpc_id": "vpc-1"},
            {"vpc_id": "", "ip": "10.0.0.1"},
        ):
            answer = await client.get("/v1/routes", params=params, headers={"x-request-id": "req-7"})
            assert answer.status_code == 400, params
            assert answer.json()["code"] == "InvalidParameter"
            assert answer.json()["request_id"] == "req-7"
            assert set(answer.json()) == {"code", "message", "request_id"}

        too_many = {"keys": [{"eip": "10.0.0.1"}] * 1001}
        answer = await client.post("/v1/routes:batch", json=too_many)
        assert answer.status_code == 400 and answer.json()["code"] == "InvalidParameter"
        for body in (
            {"keys": [{"vpc_id": "vpc-1", "ip": "nope"}]},
            {"keys": [{"vpc_id": "vpc-1"}]},
            {"keys": [{"ip": "10.0.0.1"}]},
            {"keys": [{"vpc_id": "vpc-1", "ip": "10.0.0.1", "eip": "203.0.113.7"}]},
            {},
            {"x": 1},
        ):
            answer = await client.post("/v1/routes:batch", json=body)
            assert answer.status_code == 400, body
            assert answer.json()["code"] == "InvalidParameter"
        answer = await client.post(
            "/v1/routes:batch", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400

        answer = await client.get("/v1/nothing-here")
        assert answer.status_code == 404 and set(answer.json()) == {"code", "message", "request_id"}


async def test_batch_answers_every_key_in_order(settings: Settings, db: asyncpg.Pool) -> None:
    await insert_havip(db, "havip-1", version=2, ip="10.0.0.100", eip="203.0.113.7", owner=OWNER_A, attached=(OWNER_A,))
    await insert_havip(db, "havip-2", version=1, ip="10.0.0.101")
    async with running(settings) as (_, client):
        await ready(client)
        keys = [
            {"vpc_id": "vpc-1", "ip": "10.0.0.101"},
            {"vpc_id": "vpc-1", "ip": "10.0.0.199"},
            {"eip": "203.0.113.7"},
            {"vpc_id": "vpc-1", "ip": "10.0.0.100"},
        ]
        answer = await client.post("/v1/routes:batch", json={"keys": keys})
        assert answer.status_code == 200
        routes = answer.json()["routes"]
        assert [r["havip_id"] if r else None for r in routes] == ["havip-2", None, "havip-1", "havip-1"]
        assert routes[0]["instance_id"] is None
        assert routes[3] == {
            "havip_id": "havip-1",
            "version": 2,
            "instance_id": "i-a",
            "eni_id": None,
            "private_ip": "10.0.0.11",
            "host_id": "host-a",
        }

        answer = await client.post("/v1/routes:batch", json={"keys": [{"eip": "10.0.0.1"}] * 1000})
        assert answer.status_code == 200 and answer.json()["routes"] == [None] * 1000
        answer = await client.post("/v1/routes:batch", json={"keys": []})
        assert answer.json() == {"routes": []}


async def test_the_served_process_answers_and_stops_cleanly_on_sigterm(
    settings: Settings, db: asyncpg.Pool, tmp_path: Any
) -> None:
    await insert_havip(db, "havip-1", version=4, ip="10.0.0.100", owner=OWNER_A, attached=(OWNER_A,))
    service = ServiceProcess("forwarder", settings, tmp_path).start()
    try:
        await asyncio.to_thread(service.wait_ready, 60)
        async with httpx.AsyncClient(base_url=service.url) as client:
            answer = await client.get("/v1/routes", params={"vpc_id": "vpc-1", "ip": "10.0.0.100"})
            assert answer.status_code == 200 and answer.json()["version"] == 4
            async with Publisher(settings) as publisher:
                await publisher.send(mapping("havip-1", 5, ip="10.0.0.100", owner=OWNER_B))
            await eventually(lambda: _is(client, "10.0.0.100", 5), "the served process follows the topic")
        await asyncio.to_thread(service.stop)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended
        assert service.process is not None and service.process.returncode in (0, -signal.SIGTERM), service.tail()
        assert "forwarder stopped havips=1" in service.tail(), service.tail()
    finally:
        service.kill()


async def test_a_broker_it_cannot_reach_is_retried_not_fatal(settings: Settings, db: asyncpg.Pool) -> None:
    nowhere = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})

    def errors() -> float:
        return REGISTRY.get_sample_value("havip_forwarder_follow_errors_total") or 0.0

    errors_before = errors()
    follower = MappingFollower(nowhere, db, retry_seconds=0.1)
    follower.start()
    try:
        await eventually(lambda: errors() >= errors_before + 2, "two failed attempts, logged and counted")
        assert follower.running  # still trying
        assert not follower.caught_up
        assert follower.not_caught_up() == "connecting to the broker"
    finally:
        await follower.stop()
    assert not follower.running
