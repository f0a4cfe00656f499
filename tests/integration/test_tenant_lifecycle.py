"""The tenant lifecycle through the whole pipeline: the four services as processes.

Delete, EIPs and the public scenario at the forwarder, commands produced
straight to Kafka, a reused command_id, a command the mapping service cannot
apply, the per-tenant HAVIP limit, and a gateway killed between recording a
command and publishing it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from schemas import topics
from schemas.messages import AttachHaVip, CommandRejected, CreateHaVip, EipChanged
from services.dev.embedded import free_port
from services.dev.processes import ServiceProcess
from services.dev.walkthrough import Tenant
from services.gateway.tokens import Principal, store_token
from services.quota.tenant_limits import set_limits
from services.runtime.db import connect_pool
from services.runtime.settings import Settings
from tests.conftest import Infra
from tests.inventory_tools import TENANT, Publisher, instance, vswitch
from tests.kafka_tools import read_topic
from tests.pipeline_tools import running_pipeline

pytestmark = pytest.mark.integration

TOKEN = "tok-lifecycle"
OTHER_TENANT = "tenant-other"
OTHER_TOKEN = "tok-lifecycle-other"
AGENTS = {f"i-{n}": f"tok-agent-i-{n}" for n in range(1, 4)}


@dataclass
class Platform:
    settings: Settings
    db: asyncpg.Pool
    tenant: Tenant
    other: Tenant
    logs: Path

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def platform(infra: Infra, workdir: Path) -> AsyncIterator[Platform]:
    async with running_pipeline(infra, workdir, "lifecycle") as pipeline:
        settings = pipeline.settings
        db = await connect_pool(settings.database_url, max_size=10)
        await store_token(db, TOKEN, Principal("tenant", TENANT))
        await store_token(db, OTHER_TOKEN, Principal("tenant", OTHER_TENANT))
        for instance_id, token in AGENTS.items():
            await store_token(db, token, Principal("agent", TENANT, instance_id))
        async with Publisher(settings) as publisher:
            await publisher.inventory([vswitch(), *(instance(n) for n in range(1, 7))])
            for eip_id, tenant_id, ip in (
                ("eip-1", TENANT, "203.0.113.10"),
                ("eip-2", TENANT, "203.0.113.11"),
                ("eip-theirs", OTHER_TENANT, "203.0.113.99"),
            ):
                eip = EipChanged(eip_id=eip_id, tenant_id=tenant_id, ip_address=ip, revision=1)
                await publisher.send(topics.INVENTORY, eip_id, eip)
        try:
            async with (
                httpx.AsyncClient(base_url=pipeline.gateway_url, timeout=60) as gateway,
                httpx.AsyncClient(base_url=pipeline.forwarder_url, timeout=30) as forwarder,
            ):
                yield Platform(
                    settings,
                    db,
                    Tenant(gateway, forwarder, TOKEN, AGENTS),
                    Tenant(gateway, forwarder, OTHER_TOKEN, {}),
                    pipeline.logs,
                )
        finally:
            await db.close()


async def eventually(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def failed_with(operation: dict[str, Any], code: str) -> None:
    assert operation["status"] == "Failed" and operation["error"]["code"] == code, operation


async def test_delete_is_refused_while_attached_then_releases_the_address(platform: Platform) -> None:
    tenant = platform.tenant
    havip = await tenant.create_havip("vsw-a", ip_address="10.1.0.50")
    havip_id = havip["havip_id"]
    assert (await tenant.attach(havip_id, "i-1"))["status"] == "Succeeded"
    failed_with(await tenant.delete(havip_id), "DependencyViolation.HaVip")
    assert (await tenant.havip(havip_id))["status"] == "InUse"

    assert (await tenant.detach(havip_id, "i-1"))["status"] == "Succeeded"
    assert (await tenant.delete(havip_id))["status"] == "Succeeded"
    assert (await tenant.havip(havip_id))["status"] == "Deleted"
    listed = await tenant.gateway.get("/v1/havips", headers=platform.auth())
    assert havip_id not in {h["havip_id"] for h in listed.json()["havips"]}
    deleted = await tenant.gateway.get("/v1/havips", params={"status": "Deleted"}, headers=platform.auth())
    assert havip_id in {h["havip_id"] for h in deleted.json()["havips"]}
    # Gone at the forwarder, and nothing more can be done with it.
    await eventually(lambda: _route_gone(tenant, "vpc-t", "10.1.0.50"))
    again = await tenant.gateway.delete(f"/v1/havips/{havip_id}", headers=platform.auth())
    assert again.status_code == 404 and again.json()["code"] == "NotFound.HaVip"
    # The address is free again once the delete is applied.
    reused = await tenant.create_havip("vsw-a", ip_address="10.1.0.50")
    assert reused["havip_id"] != havip_id and reused["status"] == "Available"
    assert (await tenant.delete(reused["havip_id"]))["status"] == "Succeeded"


async def _route_gone(tenant: Tenant, vpc_id: str | None, ip: str) -> bool:
    return await tenant.route(vpc_id, ip) is None


async def test_a_havip_being_deleted_shows_deleting(platform: Platform) -> None:
    tenant = platform.tenant
    havip = await tenant.create_havip("vsw-a")
    # A delete recorded but not yet applied (as while quota and mapping work on it).
    await platform.db.execute(
        "INSERT INTO operations (operation_id, tenant_id, kind, havip_id, status, request)"
        " VALUES ($1, $2, 'DeleteHaVip', $3, 'Pending', '{}')",
        f"op-{uuid.uuid4().hex}",
        TENANT,
        havip["havip_id"],
    )
    assert (await tenant.havip(havip["havip_id"]))["status"] == "Deleting"


async def test_the_public_scenario_the_eip_follows_every_failover(platform: Platform) -> None:
    tenant = platform.tenant
    havip = await tenant.create_havip("vsw-a", ip_address="10.1.0.60")
    havip_id = havip["havip_id"]
    for instance_id in ("i-2", "i-3"):
        assert (await tenant.attach(havip_id, instance_id))["status"] == "Succeeded"
    assert (await tenant.associate_eip(havip_id, "eip-1"))["status"] == "Succeeded"
    assert (await tenant.havip(havip_id))["eips"] == [{"eip_id": "eip-1", "ip_address": "203.0.113.10"}]

    await tenant.report(havip_id, "i-2", "MASTER", priority=150)
    await tenant.wait_owner(None, "203.0.113.10", "i-2")
    for new_owner, old_owner in (("i-3", "i-2"), ("i-2", "i-3")):
        await tenant.report(havip_id, new_owner, "MASTER", priority=150)
        await tenant.report(havip_id, old_owner, "BACKUP", priority=100)
        await tenant.wait_owner(None, "203.0.113.10", new_owner)
        # The same versioned update moved the private address and the EIP.
        private = await tenant.route("vpc-t", "10.1.0.60")
        public = await tenant.route(None, "203.0.113.10")
        assert private == public
    batch = await tenant.forwarder.post(
        "/v1/routes:batch", json={"keys": [{"vpc_id": "vpc-t", "ip": "10.1.0.60"}, {"eip": "203.0.113.10"}]}
    )
    private_answer, public_answer = batch.json()["routes"]
    assert private_answer == public_answer and public_answer["instance_id"] == "i-2"

    # One EIP per HAVIP; only the tenant's own, free EIPs.
    failed_with(await tenant.associate_eip(havip_id, "eip-2"), "QuotaExceeded.HaVipEip")
    failed_with(await tenant.associate_eip(havip_id, "eip-theirs"), "NotFound.Eip")
    failed_with(await tenant.associate_eip(havip_id, "eip-nowhere"), "NotFound.Eip")
    other = await tenant.create_havip("vsw-a")
    failed_with(await tenant.associate_eip(other["havip_id"], "eip-1"), "InvalidEip.InUse")
    failed_with(await tenant.delete(havip_id), "DependencyViolation.HaVip")

    assert (await tenant.release_eip(havip_id))["status"] == "Succeeded"
    await eventually(lambda: _route_gone(tenant, None, "203.0.113.10"))
    route = await tenant.route("vpc-t", "10.1.0.60")
    assert route is not None and route["instance_id"] == "i-2"
    nothing = await tenant.gateway.delete(f"/v1/havips/{havip_id}/eip", headers=platform.auth())
    assert nothing.status_code == 404 and nothing.json()["code"] == "NotFound.Eip"
    # Freed: another HAVIP may take it now.
    assert (await tenant.associate_eip(other["havip_id"], "eip-1"))["status"] == "Succeeded"
    assert (await tenant.release_eip(other["havip_id"], "eip-1"))["status"] == "Succeeded"


async def _operation(platform: Platform, operation_id: str, token: str = TOKEN) -> httpx.Response:
    return await platform.tenant.gateway.get(f"/v1/operations/{operation_id}", headers=platform.auth(token))


async def test_a_command_produced_to_kafka_is_an_operation_and_its_id_cannot_be_reused(platform: Platform) -> None:
    command = CreateHaVip(
        command_id="ext-create-1", tenant_id=TENANT, havip_id="havip-external-1", vswitch_id="vsw-a", name="ext"
    )
    async with Publisher(platform.settings) as publisher:
        await publisher.send(topics.COMMANDS, command.havip_id, command)

        async def settled() -> bool:
            answer = await _operation(platform, command.command_id)
            return answer.status_code == 200 and answer.json()["status"] != "Pending"

        await eventually(settled)
        operation = (await _operation(platform, command.command_id)).json()
        assert (operation["status"], operation["kind"], operation["havip_id"]) == (
            "Succeeded",
            "CreateHaVip",
            "havip-external-1",
        )
        # Another tenant cannot even see that it exists.
        hidden = await _operation(platform, command.command_id, OTHER_TOKEN)
        assert hidden.status_code == 404 and hidden.json()["code"] == "NotFound.Operation"

        # The same command again (a producer's retry: a new message id) changes nothing.
        await publisher.send(topics.COMMANDS, command.havip_id, command.model_copy(update={"message_id": "retry"}))
        # The id reused for another command is refused, and settles nothing.
        reuse = CreateHaVip(
            command_id="ext-create-1", tenant_id=TENANT, havip_id="havip-external-2", vswitch_id="vsw-a"
        )
        await publisher.send(topics.COMMANDS, reuse.havip_id, reuse)

    async def mismatch_published() -> bool:
        results = await read_topic(platform.settings, topics.RESULTS, until=1000, timeout=1)
        return any(
            isinstance(r, CommandRejected)
            and r.command_id == "ext-create-1"
            and r.code == "IdempotentParameterMismatch"
            and r.havip_id == "havip-external-2"
            for r in results
        )

    await eventually(mismatch_published)
    assert (await _operation(platform, "ext-create-1")).json()["status"] == "Succeeded"
    gone = await platform.tenant.gateway.get("/v1/havips/havip-external-2", headers=platform.auth())
    assert gone.status_code == 404
    assert await platform.db.fetchval("SELECT count(*) FROM havips WHERE havip_id = 'havip-external-1'") == 1


async def test_a_command_with_another_tenants_ids_is_answered_as_unknown(platform: Platform) -> None:
    theirs = await platform.other.gateway.post(
        "/v1/havips", json={"vswitch_id": "vsw-a"}, headers=platform.auth(OTHER_TOKEN)
    )
    # Their create fails (the vSwitch is not theirs) exactly as one for a vSwitch nobody has.
    operation = await platform.other.wait_operation(theirs)
    failed_with(operation, "NotFound.VSwitch")
    mine = await platform.tenant.create_havip("vsw-a")

    sneaky = AttachHaVip(command_id="ext-sneaky-1", tenant_id=OTHER_TENANT, havip_id=mine["havip_id"], target_id="i-4")
    async with Publisher(platform.settings) as publisher:
        await publisher.send(topics.COMMANDS, sneaky.havip_id, sneaky)

    async def settled() -> bool:
        answer = await _operation(platform, sneaky.command_id, OTHER_TOKEN)
        return answer.status_code == 200 and answer.json()["status"] != "Pending"

    await eventually(settled)
    failed_with((await _operation(platform, sneaky.command_id, OTHER_TOKEN)).json(), "NotFound.HaVip")
    assert (await _operation(platform, sneaky.command_id)).status_code == 404
    assert (await platform.tenant.havip(mine["havip_id"]))["attachments"] == []


async def test_a_command_the_mapping_service_cannot_apply_releases_its_reservation(platform: Platform) -> None:
    tenant = platform.tenant
    havip = await tenant.create_havip("vsw-a")
    # The mapping service's inventory copy already knows i-5 was deleted; quota's copy does not yet.
    await platform.db.execute("UPDATE instances SET status = 'Deleted' WHERE instance_id = 'i-5'")
    try:
        operation = await tenant.attach(havip["havip_id"], "i-5")
    finally:
        await platform.db.execute("UPDATE instances SET status = 'Running' WHERE instance_id = 'i-5'")
    failed_with(operation, "IncorrectInstanceStatus")

    async def released() -> bool:
        return not await platform.db.fetchval(
            "SELECT count(*) FROM quota_attachments WHERE havip_id = $1", havip["havip_id"]
        )

    await eventually(released)
    # Released for real: the same attach now succeeds.
    assert (await tenant.attach(havip["havip_id"], "i-5"))["status"] == "Succeeded"
    assert (await tenant.detach(havip["havip_id"], "i-5"))["status"] == "Succeeded"


async def test_the_tenants_havip_count_is_limited_and_freed_by_delete(platform: Platform) -> None:
    held = await platform.db.fetchval("SELECT count(*) FROM quota_havips WHERE tenant_id = $1", TENANT)
    await set_limits(platform.db, TENANT, {"havips": held + 1})
    try:
        last = await platform.tenant.create_havip("vsw-a")
        refused = await platform.tenant.wait_operation(
            await platform.tenant.gateway.post("/v1/havips", json={"vswitch_id": "vsw-a"}, headers=platform.auth())
        )
        failed_with(refused, "QuotaExceeded.HaVip")
        assert (await platform.tenant.delete(last["havip_id"]))["status"] == "Succeeded"
        assert (await platform.tenant.create_havip("vsw-a"))["status"] == "Available"
    finally:
        await set_limits(platform.db, TENANT, {"havips": None})


async def test_a_gateway_killed_between_recording_and_publishing_loses_no_command(platform: Platform) -> None:
    """The command is in the outbox with its operation; another replica's relay publishes it."""
    port = free_port()
    doomed = ServiceProcess(
        "gateway",
        platform.settings.model_copy(update={"gateway_port": port}),
        platform.logs,
        extra_env={"HAVIP_FAILPOINTS": "gateway.command-recorded"},
    ).start()
    try:
        await asyncio.to_thread(doomed.wait_ready)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            with pytest.raises(httpx.TransportError):
                await client.post(
                    "/v1/havips",
                    json={"vswitch_id": "vsw-a", "name": "survivor"},
                    headers={**platform.auth(), "Idempotency-Key": "kill-me-once"},
                )
        assert doomed.process is not None
        assert await asyncio.to_thread(doomed.process.wait, 30) != 0  # killed at the failpoint
        assert "failpoint gateway.command-recorded reached" in doomed.tail()
    finally:
        doomed.kill()
    # The tenant retries with the same key at the surviving gateway: the recorded operation, which completes.
    retry = await platform.tenant.gateway.post(
        "/v1/havips",
        json={"vswitch_id": "vsw-a", "name": "survivor"},
        headers={**platform.auth(), "Idempotency-Key": "kill-me-once"},
    )
    operation = await platform.tenant.wait_operation(retry)
    assert operation["status"] == "Succeeded"
    assert await platform.db.fetchval("SELECT count(*) FROM havips WHERE name = 'survivor'") == 1
    assert await platform.db.fetchval("SELECT count(*) FROM command_outbox") == 0
