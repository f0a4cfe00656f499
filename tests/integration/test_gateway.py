"""The gateway against a real broker and PostgreSQL, served in-process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from schemas import topics
from schemas.messages import (
    AttachHaVip,
    CommandRejected,
    CommandSucceeded,
    CreateHaVip,
    DeadLettered,
    DetachHaVip,
    VrrpReported,
)
from services.dev.processes import ServiceProcess
from services.gateway.app import create_app
from services.gateway.tokens import Principal, store_token
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings
from tests.kafka_tools import read_topic
from tests.net_tools import TcpProxy

pytestmark = pytest.mark.integration

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
TENANT_TOKEN = "tok-tenant-a"
OTHER_TOKEN = "tok-tenant-b"
AGENT_TOKEN = "tok-agent-i-web1"
OTHER_AGENT_TOKEN = "tok-agent-i-other"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


TENANT_AUTH = bearer(TENANT_TOKEN)


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # raise_app_exceptions=False: a 500 must reach the test as the body a client sees.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            yield client


@pytest.fixture
async def gateway(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    await store_token(db, TENANT_TOKEN, Principal("tenant", TENANT))
    await store_token(db, OTHER_TOKEN, Principal("tenant", OTHER_TENANT))
    await store_token(db, AGENT_TOKEN, Principal("agent", TENANT, "i-web1"))
    await store_token(db, OTHER_AGENT_TOKEN, Principal("agent", OTHER_TENANT, "i-other"))
    async with running_gateway(settings) as client:
        yield client


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = new_producer(settings)
    await producer.start()
    yield producer
    await producer.stop()


async def seed_havip(db: asyncpg.Pool, havip_id: str, tenant_id: str = TENANT, **columns: Any) -> None:
    row = {
        "vpc_id": "vpc-1",
        "vswitch_id": "vsw-1",
        "ip_address": "192.168.1.100",
        "status": "Available",
        "version": 1,
        **columns,
    }
    await db.execute(
        "INSERT INTO havips (havip_id, tenant_id, vpc_id, vswitch_id, ip_address, status, version, name,"
        " owner_target_id) VALUES ($1, $2, $3, $4, $5::inet, $6, $7, $8, $9)",
        havip_id,
        tenant_id,
        row["vpc_id"],
        row["vswitch_id"],
        row["ip_address"],
        row["status"],
        row["version"],
        row.get("name", ""),
        row.get("owner_target_id"),
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


def assert_error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code, body
    assert set(body) == {"code", "message", "request_id"}
    assert body["request_id"] == answer.headers["x-request-id"]
    assert body["message"]
    return body


# --- creating --------------------------------------------------------------------------------


async def test_create_answers_creating_and_publishes_the_command(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    answer = await gateway.post(
        "/v1/havips",
        json={"vswitch_id": "vsw-1", "ip_address": "192.168.1.50", "name": "web", "description": "front"},
        headers=TENANT_AUTH,
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    havip, operation = body["havip"], body["operation"]
    assert havip["havip_id"].startswith("havip-") and len(havip["havip_id"]) == len("havip-") + 16
    assert havip["status"] == "Creating"
    assert (havip["vswitch_id"], havip["ip_address"], havip["name"]) == ("vsw-1", "192.168.1.50", "web")
    assert operation["operation_id"].startswith("op-")
    assert (operation["kind"], operation["status"], operation["error"]) == ("CreateHaVip", "Pending", None)
    assert operation["havip_id"] == havip["havip_id"]

    [command] = await read_topic(settings, topics.COMMANDS, until=1)
    assert isinstance(command, CreateHaVip)
    assert command.command_id == operation["operation_id"]
    assert (command.tenant_id, command.havip_id) == (TENANT, havip["havip_id"])
    assert (command.vswitch_id, command.ip_address, command.name, command.description) == (
        "vsw-1",
        "192.168.1.50",
        "web",
        "front",
    )

    # Until the mapping service writes it, the HAVIP is read from its create operation.
    shown = await gateway.get(f"/v1/havips/{havip['havip_id']}", headers=TENANT_AUTH)
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "Creating"
    assert shown.json()["name"] == "web"
    pending = await gateway.get(f"/v1/operations/{operation['operation_id']}", headers=TENANT_AUTH)
    assert pending.json()["status"] == "Pending"


async def test_create_without_an_address_leaves_the_choice_to_quota(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    answer = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)
    assert answer.status_code == 202, answer.text
    assert answer.json()["havip"]["ip_address"] is None
    [command] = await read_topic(settings, topics.COMMANDS, until=1)
    assert command.ip_address is None


@pytest.mark.parametrize(
    ("address", "code"),
    [
        ("2001:db8::1", "InvalidIpAddress.Version"),
        ("192.168.1.300", "InvalidIpAddress.Malformed"),
        ("web", "InvalidIpAddress.Malformed"),
    ],
)
async def test_create_refuses_addresses_that_are_not_ipv4(
    gateway: httpx.AsyncClient, db: asyncpg.Pool, address: str, code: str
) -> None:
    answer = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1", "ip_address": address}, headers=TENANT_AUTH)
    assert_error(answer, 400, code)
    assert await db.fetchval("SELECT count(*) FROM operations") == 0


async def test_a_malformed_body_is_invalid_parameter_naming_the_field(gateway: httpx.AsyncClient) -> None:
    missing = await gateway.post("/v1/havips", json={"name": "x"}, headers={**TENANT_AUTH, "X-Request-ID": "req-123"})
    body = assert_error(missing, 400, "InvalidParameter")
    assert body["request_id"] == "req-123"
    assert "vswitch_id" in body["message"]

    unknown_field = await gateway.post(
        "/v1/havips", json={"vswitch_id": "vsw-1", "ip": "10.0.0.1"}, headers=TENANT_AUTH
    )
    assert "ip" in assert_error(unknown_field, 400, "InvalidParameter")["message"]

    not_json = await gateway.post(
        "/v1/havips", content=b"{not json", headers={**TENANT_AUTH, "Content-Type": "application/json"}
    )
    assert_error(not_json, 400, "InvalidParameter")
    assert len(not_json.headers["x-request-id"]) >= 16  # made up when the caller sent none


# --- who may call ------------------------------------------------------------------------------


async def test_tokens_decide_who_may_call_what(gateway: httpx.AsyncClient) -> None:
    body = {"vswitch_id": "vsw-1"}
    assert_error(await gateway.post("/v1/havips", json=body), 401, "Unauthorized")
    assert_error(await gateway.post("/v1/havips", json=body, headers=bearer("no-such-token")), 401, "Unauthorized")
    assert_error(await gateway.get("/v1/havips/havip-x", headers={"Authorization": "Basic abc"}), 401, "Unauthorized")
    assert_error(await gateway.post("/v1/havips", json=body, headers=bearer(AGENT_TOKEN)), 403, "Forbidden")
    assert_error(await gateway.get("/v1/operations/op-1", headers=bearer(AGENT_TOKEN)), 403, "Forbidden")
    report = {"havip_id": "havip-x", "state": "MASTER", "priority": 100, "seq": 1}
    assert_error(await gateway.post("/v1/vrrp-events", json=report, headers=TENANT_AUTH), 403, "Forbidden")
    assert_error(await gateway.post("/v1/vrrp-events", json=report), 401, "Unauthorized")


async def test_another_tenants_havip_answers_as_if_it_did_not_exist(
    gateway: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    await seed_havip(db, "havip-of-b", tenant_id=OTHER_TENANT)
    created = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-9"}, headers=bearer(OTHER_TOKEN))
    creating_id = created.json()["havip"]["havip_id"]
    operation_id = created.json()["operation"]["operation_id"]

    for havip_id in ("havip-of-b", creating_id):
        assert_error(await gateway.get(f"/v1/havips/{havip_id}", headers=TENANT_AUTH), 404, "NotFound.HaVip")
        attach = await gateway.post(
            f"/v1/havips/{havip_id}/associations", json={"instance_id": "i-web1"}, headers=TENANT_AUTH
        )
        assert_error(attach, 404, "NotFound.HaVip")
        detach = await gateway.delete(f"/v1/havips/{havip_id}/associations/i-web1", headers=TENANT_AUTH)
        assert_error(detach, 404, "NotFound.HaVip")
    assert_error(await gateway.get("/v1/havips/havip-nothing", headers=TENANT_AUTH), 404, "NotFound.HaVip")
    assert_error(await gateway.get(f"/v1/operations/{operation_id}", headers=TENANT_AUTH), 404, "NotFound.Operation")
    report = {"havip_id": "havip-of-b", "state": "MASTER", "priority": 100, "seq": 1}
    assert_error(await gateway.post("/v1/vrrp-events", json=report, headers=bearer(AGENT_TOKEN)), 404, "NotFound.HaVip")
    # Only the other tenant's own create reached the commands topic.
    commands = await read_topic(settings, topics.COMMANDS, until=2, timeout=5)
    assert [c.tenant_id for c in commands] == [OTHER_TENANT]


# --- idempotency --------------------------------------------------------------------------------


async def test_the_same_idempotency_key_and_request_answer_the_first_operation(
    gateway: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    headers = {**TENANT_AUTH, "Idempotency-Key": "create-web-1"}
    first = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1", "name": "web"}, headers=headers)
    # Same request, keys in another order: still the same request.
    again = await gateway.post("/v1/havips", json={"name": "web", "vswitch_id": "vsw-1"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["operation"]["operation_id"] == first.json()["operation"]["operation_id"]
    assert again.json()["havip"] == first.json()["havip"]

    different = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-2", "name": "web"}, headers=headers)
    assert_error(different, 409, "IdempotentParameterMismatch")
    # The same key on another call is another request too.
    other_call = await gateway.post(
        f"/v1/havips/{first.json()['havip']['havip_id']}/associations",
        json={"instance_id": "i-web1"},
        headers=headers,
    )
    assert_error(other_call, 409, "IdempotentParameterMismatch")

    # Keys are per tenant: another tenant's identical key is its own.
    theirs = await gateway.post(
        "/v1/havips",
        json={"vswitch_id": "vsw-1", "name": "web"},
        headers={**bearer(OTHER_TOKEN), "Idempotency-Key": "create-web-1"},
    )
    assert theirs.status_code == 202
    assert theirs.json()["operation"]["operation_id"] != first.json()["operation"]["operation_id"]

    assert await db.fetchval("SELECT count(*) FROM operations") == 2
    commands = await read_topic(settings, topics.COMMANDS, until=3, timeout=5)
    assert len(commands) == 2


async def test_concurrent_requests_with_one_key_create_one_operation(
    gateway: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    await seed_havip(db, "havip-1")
    # Open the pool's connections first: a request waiting for a new connection
    # would arrive after the race is over.
    await asyncio.gather(*(gateway.get("/v1/operations/op-none", headers=TENANT_AUTH) for _ in range(10)))
    headers = {**TENANT_AUTH, "Idempotency-Key": "attach-web1"}
    answers = await asyncio.gather(
        *(
            gateway.post("/v1/havips/havip-1/associations", json={"instance_id": "i-web1"}, headers=headers)
            for _ in range(6)
        )
    )
    assert [a.status_code for a in answers] == [202] * 6, [a.text for a in answers]
    assert len({a.json()["operation"]["operation_id"] for a in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM operations") == 1
    commands = await read_topic(settings, topics.COMMANDS, until=2, timeout=5)
    assert len(commands) == 1


# --- associations -------------------------------------------------------------------------------


async def test_attach_and_detach_publish_commands_for_the_target(
    gateway: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    await seed_havip(db, "havip-1")
    attach = await gateway.post("/v1/havips/havip-1/associations", json={"eni_id": "eni-7"}, headers=TENANT_AUTH)
    assert attach.status_code == 202, attach.text
    assert attach.json()["operation"]["kind"] == "AttachHaVip"
    detach = await gateway.delete("/v1/havips/havip-1/associations/i-web2", headers=TENANT_AUTH)
    assert detach.status_code == 202, detach.text
    assert detach.json()["operation"]["kind"] == "DetachHaVip"

    commands = await read_topic(settings, topics.COMMANDS, until=2)
    by_type = {type(c): c for c in commands}
    assert by_type[AttachHaVip].target_id == "eni-7"
    assert by_type[AttachHaVip].command_id == attach.json()["operation"]["operation_id"]
    assert by_type[DetachHaVip].target_id == "i-web2"
    assert by_type[DetachHaVip].command_id == detach.json()["operation"]["operation_id"]
    assert {c.havip_id for c in commands} == {"havip-1"}


async def test_attach_needs_exactly_one_target(gateway: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    await seed_havip(db, "havip-1")
    for body in ({}, {"instance_id": "i-1", "eni_id": "eni-1"}, {"instance_id": ""}):
        answer = await gateway.post("/v1/havips/havip-1/associations", json=body, headers=TENANT_AUTH)
        assert_error(answer, 400, "InvalidParameter")


async def test_a_havip_being_created_can_already_be_attached(gateway: httpx.AsyncClient, settings: Settings) -> None:
    created = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)
    havip_id = created.json()["havip"]["havip_id"]
    attach = await gateway.post(
        f"/v1/havips/{havip_id}/associations", json={"instance_id": "i-web1"}, headers=TENANT_AUTH
    )
    assert attach.status_code == 202, attach.text


# --- reading ------------------------------------------------------------------------------------


async def test_a_havip_shows_attachments_their_last_reports_and_the_owner(
    gateway: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    await db.execute(
        "INSERT INTO instances VALUES ('i-web1', $1, 'vpc-1', 'vsw-1', '192.168.1.11', 'Running', 'host-a', 1),"
        " ('i-web2', $1, 'vpc-1', 'vsw-1', '192.168.1.12', 'Running', 'host-b', 1)",
        TENANT,
    )
    await seed_havip(db, "havip-1", status="InUse", version=7, name="web", owner_target_id="i-web1")
    await db.execute("INSERT INTO havip_eips VALUES ('eip-1', 'havip-1', '203.0.113.10')")
    await db.execute(
        "INSERT INTO attachments (havip_id, target_id, instance_id) VALUES"
        " ('havip-1', 'i-web1', 'i-web1'), ('havip-1', 'i-web2', 'i-web2')"
    )
    await db.execute("INSERT INTO vrrp_reports VALUES ('havip-1', 'i-web1', 'MASTER', 150, 9, now(), now())")
    answer = await gateway.get("/v1/havips/havip-1", headers=TENANT_AUTH)
    assert answer.status_code == 200, answer.text
    havip = answer.json()
    assert (havip["status"], havip["version"], havip["name"]) == ("InUse", 7, "web")
    assert (havip["ip_address"], havip["vpc_id"]) == ("192.168.1.100", "vpc-1")
    assert havip["eips"] == [{"eip_id": "eip-1", "ip_address": "203.0.113.10"}]
    assert havip["owner"] == {
        "instance_id": "i-web1",
        "eni_id": None,
        "private_ip": "192.168.1.11",
        "host_id": "host-a",
    }
    attachments = {a["target_id"]: a for a in havip["attachments"]}
    assert set(attachments) == {"i-web1", "i-web2"}
    assert attachments["i-web1"]["vrrp"]["state"] == "MASTER"
    assert attachments["i-web1"]["vrrp"]["priority"] == 150
    assert attachments["i-web2"]["vrrp"] is None


async def test_listing_pages_through_the_tenants_havips(gateway: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    for n in range(5):
        await seed_havip(db, f"havip-{n}", ip_address=f"192.168.1.{100 + n}", vswitch_id="vsw-1" if n < 4 else "vsw-2")
    await seed_havip(db, "havip-theirs", tenant_id=OTHER_TENANT)
    creating = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)
    creating_id = creating.json()["havip"]["havip_id"]

    seen: list[str] = []
    token = None
    for _ in range(10):
        params: dict[str, Any] = {"page_size": 2, **({"page_token": token} if token else {})}
        page = await gateway.get("/v1/havips", params=params, headers=TENANT_AUTH)
        assert page.status_code == 200, page.text
        seen += [h["havip_id"] for h in page.json()["havips"]]
        token = page.json()["next_page_token"]
        if token is None:
            break
    assert seen == sorted([f"havip-{n}" for n in range(5)] + [creating_id])

    filtered = await gateway.get("/v1/havips", params={"vswitch_id": "vsw-2"}, headers=TENANT_AUTH)
    assert [h["havip_id"] for h in filtered.json()["havips"]] == ["havip-4"]
    by_status = await gateway.get("/v1/havips", params={"status": "Creating"}, headers=TENANT_AUTH)
    assert [h["havip_id"] for h in by_status.json()["havips"]] == [creating_id]
    by_ip = await gateway.get("/v1/havips", params={"ip_address": "192.168.1.102"}, headers=TENANT_AUTH)
    assert [h["havip_id"] for h in by_ip.json()["havips"]] == ["havip-2"]

    for params in ({"page_size": 101}, {"page_size": 0}, {"page_token": "junk!"}, {"status": "Sleeping"}):
        refused = await gateway.get("/v1/havips", params=params, headers=TENANT_AUTH)
        assert_error(refused, 400, "InvalidParameter")
    first = await gateway.get("/v1/havips", params={"page_size": 1}, headers=TENANT_AUTH)
    reused = await gateway.get(
        "/v1/havips", params={"page_token": first.json()["next_page_token"], "vswitch_id": "vsw-2"}, headers=TENANT_AUTH
    )
    assert_error(reused, 400, "InvalidParameter")


async def test_a_status_filter_pages_past_havips_whose_pending_delete_changes_their_status(
    gateway: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    for n in range(6):
        await seed_havip(db, f"havip-{n}", ip_address=f"192.168.1.{100 + n}")
    await seed_havip(db, "havip-gone", ip_address="192.168.1.99", status="Deleted")
    # Deletes the mapping service has not applied yet: havip-1..3 (and the deleted one) are Deleting.
    for havip_id in ("havip-1", "havip-2", "havip-3", "havip-gone"):
        await db.execute(
            "INSERT INTO operations (operation_id, tenant_id, kind, havip_id, status, request)"
            " VALUES ($1, $2, 'DeleteHaVip', $3, 'Pending', '{}'::jsonb)",
            f"op-delete-{havip_id}",
            TENANT,
            havip_id,
        )

    async def listed(**filters: str) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        token = None
        for _ in range(10):
            params: dict[str, Any] = {"page_size": 1, **filters, **({"page_token": token} if token else {})}
            page = await gateway.get("/v1/havips", params=params, headers=TENANT_AUTH)
            assert page.status_code == 200, page.text
            seen += [(h["havip_id"], h["status"]) for h in page.json()["havips"]]
            token = page.json()["next_page_token"]
            if token is None:
                return seen
        raise AssertionError(f"more pages than HAVIPs: {seen}")

    available = [("havip-0", "Available"), ("havip-4", "Available"), ("havip-5", "Available")]
    deleting = [("havip-1", "Deleting"), ("havip-2", "Deleting"), ("havip-3", "Deleting")]
    assert await listed(status="Available") == available
    assert await listed(status="Deleting") == deleting
    assert await listed(status="Deleted") == [("havip-gone", "Deleted")]
    assert await listed() == sorted(available + deleting)
    shown = await gateway.get("/v1/havips/havip-2", headers=TENANT_AUTH)
    assert shown.json()["status"] == "Deleting"


async def test_unknown_routes_and_methods_answer_in_the_error_format(gateway: httpx.AsyncClient) -> None:
    assert_error(await gateway.get("/v2/nothing", headers=TENANT_AUTH), 404, "NotFound")
    assert_error(await gateway.put("/v1/operations/op-1", headers=TENANT_AUTH), 405, "MethodNotAllowed")


# --- VRRP reports -------------------------------------------------------------------------------


async def attach_in_db(db: asyncpg.Pool, havip_id: str, instance_id: str) -> None:
    await db.execute(
        "INSERT INTO attachments (havip_id, target_id, instance_id) VALUES ($1, $2, $2)", havip_id, instance_id
    )


async def test_a_vrrp_report_is_published_with_the_tokens_instance(
    gateway: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    await seed_havip(db, "havip-1")
    await attach_in_db(db, "havip-1", "i-web1")
    answer = await gateway.post(
        "/v1/vrrp-events",
        # The agent cannot speak for another instance: instance and tenant come from its token.
        json={
            "havip_id": "havip-1",
            "state": "MASTER",
            "priority": 150,
            "seq": 42,
            "reported_at": "2024-05-01T10:00:00+00:00",
            "lease_seconds": 2.5,
        },
        headers=bearer(AGENT_TOKEN),
    )
    assert answer.status_code == 202, answer.text
    [report] = await read_topic(settings, topics.VRRP, until=1)
    assert isinstance(report, VrrpReported)
    assert report.message_id == answer.json()["message_id"]
    assert (report.havip_id, report.tenant_id, report.instance_id) == ("havip-1", TENANT, "i-web1")
    assert (report.state, report.priority, report.seq, report.lease_seconds) == ("MASTER", 150, 42, 2.5)
    assert report.reported_at.isoformat() == "2024-05-01T10:00:00+00:00"
    assert report.received_at > report.reported_at

    no_time = await gateway.post(
        "/v1/vrrp-events",
        json={"havip_id": "havip-1", "state": "BACKUP", "priority": 100, "seq": 43},
        headers=bearer(AGENT_TOKEN),
    )
    assert no_time.status_code == 202
    reports = await read_topic(settings, topics.VRRP, until=2)
    assert reports[1].reported_at == reports[1].received_at
    assert reports[1].lease_seconds is None  # a notify script: live until superseded

    day_ahead_us = int((time.time() + 2 * 86400) * 1_000_000)
    bad: object
    for bad in (
        {"havip_id": "havip-1", "state": "LEADER", "priority": 1, "seq": 1},
        {"havip_id": "havip-1", "state": "MASTER", "priority": 256, "seq": 1},
        {"havip_id": "havip-1", "state": "MASTER", "priority": 1, "seq": -1},
        {"havip_id": "havip-1", "state": "MASTER", "priority": 1, "seq": 2**63},
        {"havip_id": "havip-1", "state": "MASTER", "priority": 1, "seq": 2**64 + 5},
        {"havip_id": "havip-1", "state": "MASTER", "priority": 1, "seq": 1, "lease_seconds": -1},
        {"havip_id": "havip-1", "state": "MASTER", "priority": 1, "seq": 1, "lease_seconds": 3600},
        {"havip_id": "havip-1", "state": "MASTER", "priority": 1, "seq": 1, "instance_id": "i-web2"},
        {"reports": []},
        {"reports": [{"havip_id": "havip-1", "state": "MASTER", "priority": 1, "seq": 1}] * 17},
    ):
        refused = await gateway.post("/v1/vrrp-events", json=bad, headers=bearer(AGENT_TOKEN))
        assert_error(refused, 400, "InvalidParameter")
    # Far ahead of any clock: it would make every later report from this instance stale. The rule moves
    # with the clock (no schema can state it), so it is a refusal like NotAttached, per report in a batch.
    ahead = {"havip_id": "havip-1", "state": "MASTER", "priority": 1, "seq": day_ahead_us}
    assert_error(
        await gateway.post("/v1/vrrp-events", json=ahead, headers=bearer(AGENT_TOKEN)), 409, "VrrpReport.SeqAhead"
    )
    batch = await gateway.post("/v1/vrrp-events", json={"reports": [ahead]}, headers=bearer(AGENT_TOKEN))
    assert batch.status_code == 202 and batch.json()["results"][0]["code"] == "VrrpReport.SeqAhead"
    # Microseconds since the epoch, as agents number their reports, are fine.
    now_us = int(time.time() * 1_000_000)
    fine = {"havip_id": "havip-1", "state": "BACKUP", "priority": 1, "seq": now_us}
    assert (await gateway.post("/v1/vrrp-events", json=fine, headers=bearer(AGENT_TOKEN))).status_code == 202


async def test_a_report_for_a_havip_the_instance_is_not_attached_to_answers_409(
    gateway: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    await seed_havip(db, "havip-1")
    await attach_in_db(db, "havip-1", "i-web2")
    report = {"havip_id": "havip-1", "state": "MASTER", "priority": 100, "seq": 1}
    assert_error(
        await gateway.post("/v1/vrrp-events", json=report, headers=bearer(AGENT_TOKEN)), 409, "VrrpReport.NotAttached"
    )
    await attach_in_db(db, "havip-1", "i-web1")
    assert (await gateway.post("/v1/vrrp-events", json=report, headers=bearer(AGENT_TOKEN))).status_code == 202
    assert len(await read_topic(settings, topics.VRRP, until=2, timeout=3)) == 1


async def test_a_batch_of_reports_answers_one_outcome_each_and_publishes_in_order(
    gateway: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    for havip_id in ("havip-1", "havip-2", "havip-3"):
        await seed_havip(db, havip_id, ip_address=f"192.168.1.{100 + int(havip_id[-1])}")
    await attach_in_db(db, "havip-1", "i-web1")
    await attach_in_db(db, "havip-3", "i-web1")
    await seed_havip(db, "havip-of-b", tenant_id=OTHER_TENANT, ip_address="192.168.1.200")
    reports = [
        {"havip_id": "havip-1", "state": "BACKUP", "priority": 100, "seq": 10},
        {"havip_id": "havip-2", "state": "MASTER", "priority": 100, "seq": 11},
        {"havip_id": "havip-of-b", "state": "MASTER", "priority": 100, "seq": 12},
        {"havip_id": "havip-3", "state": "MASTER", "priority": 100, "seq": 13, "lease_seconds": 2.5},
        {"havip_id": "havip-1", "state": "MASTER", "priority": 100, "seq": 14, "lease_seconds": 2.5},
    ]
    answer = await gateway.post("/v1/vrrp-events", json={"reports": reports}, headers=bearer(AGENT_TOKEN))
    assert answer.status_code == 202, answer.text
    results = answer.json()["results"]
    assert [(r["havip_id"], r["seq"], r["status"], r.get("code")) for r in results] == [
        ("havip-1", 10, "Accepted", None),
        ("havip-2", 11, "Refused", "VrrpReport.NotAttached"),
        ("havip-of-b", 12, "Refused", "NotFound.HaVip"),
        ("havip-3", 13, "Accepted", None),
        ("havip-1", 14, "Accepted", None),
    ]
    published = await read_topic(settings, topics.VRRP, until=3)
    # Order holds per HAVIP (one partition each); across HAVIPs it does not matter.
    assert [r.seq for r in published if r.havip_id == "havip-1"] == [10, 14]
    assert [r.seq for r in published if r.havip_id == "havip-3"] == [13]
    assert {r.message_id for r in published} == {r["message_id"] for r in results if r["status"] == "Accepted"}


async def test_owner_history_pages_newest_first_for_the_tenant_only(
    gateway: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    await seed_havip(db, "havip-1")
    await seed_havip(db, "havip-of-b", tenant_id=OTHER_TENANT, ip_address="192.168.1.200")
    for version, (previous, owner, cause) in enumerate(
        [
            (None, "i-web1", "MasterReported"),
            ("i-web1", "i-web2", "OwnerClaimLapsed"),
            ("i-web2", None, "OwnerReleased"),
        ],
        start=2,
    ):
        await db.execute(
            "INSERT INTO owner_changes (havip_id, version, previous_instance_id, instance_id, cause, detail,"
            " trigger_kind, trigger_instance_id, trigger_seq)"
            " VALUES ('havip-1', $1, $2, $3, $4, 'why', 'VrrpReport', $3, $1)",
            version,
            previous,
            owner,
            cause,
        )
    first = await gateway.get("/v1/havips/havip-1/owner-history?page_size=2", headers=TENANT_AUTH)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [c["cause"] for c in page["changes"]] == ["OwnerReleased", "OwnerClaimLapsed"]
    assert page["changes"][1]["trigger"] == {"kind": "VrrpReport", "instance_id": "i-web2", "seq": 3}
    second = await gateway.get(
        f"/v1/havips/havip-1/owner-history?page_size=2&page_token={page['next_page_token']}", headers=TENANT_AUTH
    )
    assert [c["cause"] for c in second.json()["changes"]] == ["MasterReported"]
    assert second.json()["next_page_token"] is None
    assert_error(await gateway.get("/v1/havips/havip-of-b/owner-history", headers=TENANT_AUTH), 404, "NotFound.HaVip")
    assert_error(
        await gateway.get(
            f"/v1/havips/havip-of-b/owner-history?page_token={page['next_page_token']}", headers=bearer(OTHER_TOKEN)
        ),
        400,
        "InvalidParameter",
    )


# --- results ------------------------------------------------------------------------------------


async def _operation_status(gateway: httpx.AsyncClient, operation_id: str) -> dict[str, Any]:
    answer = await gateway.get(f"/v1/operations/{operation_id}", headers=TENANT_AUTH)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_rejection_fails_the_operation_and_later_results_change_nothing(
    gateway: httpx.AsyncClient, producer: AIOKafkaProducer, settings: Settings
) -> None:
    created = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)
    operation_id = created.json()["operation"]["operation_id"]
    havip_id = created.json()["havip"]["havip_id"]
    results = topic_name(settings, topics.RESULTS)
    rejected = CommandRejected(
        tenant_id=TENANT,
        command_type="CreateHaVip",
        command_id=operation_id,
        havip_id=havip_id,
        stage="quota",
        code="InvalidIpAddress.Exhausted",
        reason="no free address in vsw-1",
    )
    await producer.send_and_wait(results, key=operation_id.encode(), value=topics.encode(rejected))

    async def failed() -> bool:
        return (await _operation_status(gateway, operation_id))["status"] == "Failed"

    await eventually(failed)
    operation = await _operation_status(gateway, operation_id)
    assert operation["error"] == {"code": "InvalidIpAddress.Exhausted", "message": "no free address in vsw-1"}
    # A failed create is no HAVIP.
    assert_error(await gateway.get(f"/v1/havips/{havip_id}", headers=TENANT_AUTH), 404, "NotFound.HaVip")

    # The first terminal outcome wins; a late success (or a replay) changes nothing.
    late = CommandSucceeded(
        tenant_id=TENANT, command_type="CreateHaVip", command_id=operation_id, havip_id=havip_id, stage="mapping"
    )
    await producer.send_and_wait(results, key=operation_id.encode(), value=topics.encode(late))
    second = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)
    second_id = second.json()["operation"]["operation_id"]
    marker = CommandSucceeded(
        tenant_id=TENANT,
        command_type="CreateHaVip",
        command_id=second_id,
        havip_id=second.json()["havip"]["havip_id"],
        stage="mapping",
    )
    # Keyed like `late`, so it lands behind it in the same partition: once the
    # marker is applied, `late` has been read too.
    await producer.send_and_wait(results, key=operation_id.encode(), value=topics.encode(marker))

    async def second_done() -> bool:
        return (await _operation_status(gateway, second_id))["status"] == "Succeeded"

    await eventually(second_done)
    assert (await _operation_status(gateway, operation_id))["status"] == "Failed"


async def test_a_garbage_result_is_dead_lettered_and_the_next_one_applied(
    gateway: httpx.AsyncClient, producer: AIOKafkaProducer, settings: Settings
) -> None:
    created = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)
    operation_id = created.json()["operation"]["operation_id"]
    results = topic_name(settings, topics.RESULTS)
    # Same key, so same partition: the good record comes after the garbage.
    await producer.send_and_wait(results, key=operation_id.encode(), value=b"{this is not a result")
    done = CommandSucceeded(
        tenant_id=TENANT,
        command_type="CreateHaVip",
        command_id=operation_id,
        havip_id=created.json()["havip"]["havip_id"],
        stage="mapping",
    )
    await producer.send_and_wait(results, key=operation_id.encode(), value=topics.encode(done))

    async def succeeded() -> bool:
        return (await _operation_status(gateway, operation_id))["status"] == "Succeeded"

    await eventually(succeeded)
    [letter] = await read_topic(settings, topics.DEAD_LETTERS, until=1)
    assert isinstance(letter, DeadLettered)
    assert letter.source_topic == results
    assert letter.code == "MalformedMessage"
    assert letter.consumer == "gateway"
    assert letter.original_value_text == "{this is not a result"


async def test_results_are_applied_after_a_restart_without_being_lost(
    settings: Settings, db: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    """Offsets are committed: a second gateway in the same group does not re-read, nor miss, results."""
    await store_token(db, TENANT_TOKEN, Principal("tenant", TENANT))
    async with running_gateway(settings) as first:
        one = (await first.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)).json()
        two = (await first.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)).json()
        results = topic_name(settings, topics.RESULTS)
        op_one = one["operation"]["operation_id"]
        succeeded = CommandSucceeded(
            tenant_id=TENANT,
            command_type="CreateHaVip",
            command_id=op_one,
            havip_id=one["havip"]["havip_id"],
            stage="mapping",
        )
        await producer.send_and_wait(results, key=op_one.encode(), value=topics.encode(succeeded))

        async def one_done() -> bool:
            return (await _operation_status(first, op_one))["status"] == "Succeeded"

        await eventually(one_done)
    # While no gateway runs, a result arrives; the next gateway must apply it.
    op_two = two["operation"]["operation_id"]
    await producer.send_and_wait(
        results,
        key=op_two.encode(),
        value=topics.encode(
            CommandRejected(
                tenant_id=TENANT,
                command_type="CreateHaVip",
                command_id=op_two,
                havip_id=two["havip"]["havip_id"],
                stage="quota",
                code="QuotaExceeded.InstanceHaVip",
                reason="too many",
            )
        ),
    )
    async with running_gateway(settings) as second:

        async def two_failed() -> bool:
            return (await _operation_status(second, op_two))["status"] == "Failed"

        await eventually(two_failed)


async def test_a_result_that_met_a_database_failure_is_retried_not_skipped(
    gateway: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    settings: Settings,
    db: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    created = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)
    operation_id = created.json()["operation"]["operation_id"]
    caplog.set_level(logging.WARNING, logger="services.runtime.group")
    # The table is away: every attempt to apply the result fails until it is back.
    await db.execute("ALTER TABLE operations RENAME TO operations_away")
    try:
        done = CommandSucceeded(
            tenant_id=TENANT,
            command_type="CreateHaVip",
            command_id=operation_id,
            havip_id=created.json()["havip"]["havip_id"],
            stage="mapping",
        )
        await producer.send_and_wait(
            topic_name(settings, topics.RESULTS), key=operation_id.encode(), value=topics.encode(done)
        )

        async def failed_twice() -> bool:
            return sum("reading them again" in r.getMessage() for r in caplog.records) >= 2

        await eventually(failed_twice)
        # Meanwhile the API answers a bare 500: no SQL, no trace, but an id to quote.
        broken = await gateway.get(f"/v1/operations/{operation_id}", headers=TENANT_AUTH)
        body = assert_error(broken, 500, "InternalError")
        assert "operations" not in body["message"] and "Traceback" not in broken.text
    finally:
        await db.execute("ALTER TABLE operations_away RENAME TO operations")

    async def succeeded() -> bool:
        return await db.fetchval("SELECT status FROM operations WHERE operation_id = $1", operation_id) == "Succeeded"

    await eventually(succeeded)


# --- health and failure -------------------------------------------------------------------------


async def test_ready_at_once_with_the_results_consumer_a_note_until_it_joined(gateway: httpx.AsyncClient) -> None:
    # VRRP reports and reads do not wait for the results consumer's group join (seconds after a restart).
    first = await gateway.get("/readyz")
    assert first.status_code == 200 and first.json()["status"] == "ready", first.text

    async def joined() -> bool:
        return (await gateway.get("/readyz")).json()["notes"] == {}

    await eventually(joined)
    assert (await gateway.get("/healthz")).json() == {"status": "ok"}
    metrics = await gateway.get("/metrics")
    assert 'havip_http_requests_total{method="GET",route="/readyz",service="gateway"' in metrics.text
    assert 'route="/readyz"' in metrics.text


async def test_while_the_broker_is_away_a_recorded_command_waits_and_new_ones_get_503(
    gateway: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    app = gateway._transport.app  # type: ignore[attr-defined]  # the app behind an ASGI transport
    await app.state.gateway.producer.stop()  # the broker is unreachable from now on
    # The first request finds out: its command is recorded, so it stays in the outbox for the relay.
    first = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=TENANT_AUTH)
    assert first.status_code == 202, first.text
    operation_id = first.json()["operation"]["operation_id"]
    assert await db.fetchval("SELECT count(*) FROM command_outbox WHERE operation_id = $1", operation_id) == 1
    # From then on requests are refused at once, with Retry-After, and nothing is recorded for them.
    headers = {**TENANT_AUTH, "Idempotency-Key": "retry-me"}
    answer = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-1"}, headers=headers)
    assert_error(answer, 503, "ServiceUnavailable")
    assert int(answer.headers["retry-after"]) >= 1
    assert await db.fetchval("SELECT count(*) FROM operations") == 1
    assert await db.fetchval("SELECT status FROM operations") == "Pending"


# --- as a process ---------------------------------------------------------------------------------


def test_havip_serve_gateway_becomes_ready_and_stops_cleanly_on_sigterm(settings: Settings, workdir: Path) -> None:
    gateway = ServiceProcess("gateway", settings, workdir).start()
    try:
        gateway.wait_ready(timeout=120)
    finally:
        gateway.stop(timeout=30)
    assert gateway.process is not None
    # uvicorn re-raises the signal once its shutdown is done, so the parent sees why it ended.
    assert gateway.process.returncode in (0, -signal.SIGTERM), gateway.tail()
    log = gateway.tail(200)
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


async def test_havip_serve_gateway_refuses_an_older_schema(settings: Settings, db: asyncpg.Pool, workdir: Path) -> None:
    await db.execute("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)")
    gateway = ServiceProcess("gateway", settings, workdir).start()
    assert gateway.process is not None
    try:
        returncode = await asyncio.to_thread(gateway.process.wait, 120)
    finally:
        gateway.kill()
    assert returncode != 0
    assert "havip migrate" in gateway.tail(200)


async def test_while_postgres_is_away_tenant_calls_answer_503_with_retry_after(
    settings: Settings, db: asyncpg.Pool
) -> None:
    """An outage is not a bug: 503 with Retry-After (never 500), and the service recovers by itself."""
    await store_token(db, TENANT_TOKEN, Principal("tenant", TENANT))
    proxy, database_url = TcpProxy.before(settings.database_url)
    await proxy.restore()
    proxied = settings.model_copy(update={"database_url": database_url})
    async with running_gateway(proxied) as gateway:
        assert (await gateway.get("/v1/havips", headers=TENANT_AUTH)).status_code == 200
        await proxy.cut()
        for method, url, body in (
            ("GET", "/v1/havips", None),
            ("GET", "/v1/operations/op-1", None),
            ("POST", "/v1/havips", {"vswitch_id": "vsw-1"}),
        ):
            answer = await gateway.request(method, url, json=body, headers=TENANT_AUTH)
            assert_error(answer, 503, "ServiceUnavailable")
            assert int(answer.headers["retry-after"]) >= 1
        await proxy.restore()

        async def back() -> bool:
            return (await gateway.get("/v1/havips", headers=TENANT_AUTH)).status_code == 200

        await eventually(back, timeout=30)
