"""Tenant isolation: every endpoint, walked with another tenant's tokens, confirms nothing.

Tenant A holds a HAVIP with an attachment, an EIP, operations and an agent
token. Every operation in the gateway's OpenAPI document is called with
tenant B's token and with agent tokens, once naming A's real resources and
once naming made-up ones: the two answers must be identical (status and
code), so nothing of A is readable, writable or even confirmed to exist.
Tenant tokens get 404 for others' resources, never 403. An agent token is
refused on tenant endpoints before any lookup (403 Forbidden, the same for
real and made-up ids), so it confirms nothing either. Commands produced to
Kafka with B's tenant and A's ids fail exactly as ones naming nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from schemas import topics
from schemas.messages import (
    AssociateEip,
    AttachHaVip,
    CreateHaVip,
    DeleteHaVip,
    DetachHaVip,
    EipChanged,
    Message,
    UnassociateEip,
)
from services.gateway.tokens import Principal, store_token
from services.runtime.db import connect_pool
from tests.conftest import Infra
from tests.inventory_tools import TENANT, Publisher, instance, vswitch
from tests.pipeline_tools import Pipeline, running_pipeline, settled_operation, succeeded

pytestmark = pytest.mark.integration

A_TOKEN = "tok-isolation-a"
B_TENANT = "tenant-isolation-b"
B_TOKEN = "tok-isolation-b"
A_AGENT = "tok-isolation-agent-a-i-2"
B_AGENT = "tok-isolation-agent-b"


@dataclass
class World:
    pipeline: Pipeline
    db: asyncpg.Pool
    gateway: httpx.AsyncClient
    real: dict[str, str]  # A's ids, by path parameter name
    made_up: dict[str, str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_operation(gateway: httpx.AsyncClient, token: str, operation_id: str) -> dict[str, Any]:
    return await settled_operation(gateway, token, operation_id)


async def submit(gateway: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    return await succeeded(gateway, A_TOKEN, method, url, **kwargs)


@pytest.fixture(scope="module")
async def world(infra: Infra, workdir: Path) -> AsyncIterator[World]:
    async with running_pipeline(infra, workdir, "isolation") as pipeline:
        db = await connect_pool(pipeline.settings.database_url, max_size=5)
        await store_token(db, A_TOKEN, Principal("tenant", TENANT))
        await store_token(db, B_TOKEN, Principal("tenant", B_TENANT))
        await store_token(db, A_AGENT, Principal("agent", TENANT, "i-2"))
        await store_token(db, B_AGENT, Principal("agent", B_TENANT, "i-b"))
        async with Publisher(pipeline.settings) as publisher:
            await publisher.inventory([vswitch(), instance(1), instance(2)])
            for eip_id, tenant in (("eip-a1", TENANT), ("eip-a2", TENANT)):
                eip = EipChanged(eip_id=eip_id, tenant_id=tenant, ip_address=f"198.51.100.{len(eip_id)}", revision=1)
                await publisher.send(topics.INVENTORY, eip_id, eip)
        try:
            async with httpx.AsyncClient(base_url=pipeline.gateway_url, timeout=60) as gateway:
                created = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-a"}, headers=auth(A_TOKEN))
                havip_id = created.json()["havip"]["havip_id"]
                create_op = await wait_operation(gateway, A_TOKEN, created.json()["operation"]["operation_id"])
                await submit(gateway, "POST", f"/v1/havips/{havip_id}/associations", json={"instance_id": "i-1"})
                await submit(gateway, "PUT", f"/v1/havips/{havip_id}/eip", json={"eip_id": "eip-a1"})
                token = await gateway.post("/v1/instances/i-1/agent-tokens", json={}, headers=auth(A_TOKEN))
                assert token.status_code == 201, token.text
                real = {
                    "havip_id": havip_id,
                    "target_id": "i-1",
                    "operation_id": create_op["operation_id"],
                    "instance_id": "i-1",
                    "token_id": token.json()["token_id"],
                    "eip_id": "eip-a1",
                }
                made_up = {
                    "havip_id": "havip-0000000000000000",
                    "target_id": "i-nowhere",
                    "operation_id": "op-00000000000000000000000000000000",
                    "instance_id": "i-nowhere",
                    "token_id": "tok-nowhere",
                    "eip_id": "eip-nowhere",
                }
                yield World(pipeline, db, gateway, real, made_up)
        finally:
            await db.close()


# What each operation is called with (besides its path parameters). A new endpoint fails the
# walk until it is listed here, so none can escape it.
def request_body(method: str, path: str, ids: dict[str, str]) -> dict[str, Any] | None:
    bodies: dict[tuple[str, str], dict[str, Any] | None] = {
        ("GET", "/v1/havips"): None,
        ("POST", "/v1/havips"): {"vswitch_id": "vsw-a"},
        ("GET", "/v1/havips/{havip_id}"): None,
        ("DELETE", "/v1/havips/{havip_id}"): None,
        ("POST", "/v1/havips/{havip_id}/associations"): {"instance_id": "i-2"},
        ("DELETE", "/v1/havips/{havip_id}/associations/{target_id}"): None,
        ("PUT", "/v1/havips/{havip_id}/eip"): {"eip_id": "eip-a2"},
        ("DELETE", "/v1/havips/{havip_id}/eip"): None,
        ("GET", "/v1/havips/{havip_id}/owner-history"): None,
        ("GET", "/v1/operations/{operation_id}"): None,
        ("POST", "/v1/vrrp-events"): {"havip_id": ids["havip_id"], "state": "MASTER", "priority": 100, "seq": 1},
        ("POST", "/v1/instances/{instance_id}/agent-tokens"): {},
        ("GET", "/v1/instances/{instance_id}/agent-tokens"): None,
        ("DELETE", "/v1/instances/{instance_id}/agent-tokens/{token_id}"): None,
    }
    if (method, path) not in bodies:
        raise AssertionError(f"{method} {path} is not walked: add it to request_body")
    return bodies[(method, path)]


async def walked_operations(gateway: httpx.AsyncClient) -> list[tuple[str, str]]:
    document = (await gateway.get("/openapi.json")).json()
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    ]


async def call(world: World, token: str, method: str, path: str, ids: dict[str, str]) -> httpx.Response:
    url = path.format(**ids)
    body = request_body(method, path, ids)
    params = {"eip_id": ids["eip_id"]} if path.endswith("/eip") and method == "DELETE" else None
    return await world.gateway.request(method, url, json=body, params=params, headers=auth(token))


def verdict(answer: httpx.Response) -> tuple[int, str | None]:
    code = answer.json().get("code") if answer.status_code >= 400 else None
    return answer.status_code, code


@pytest.mark.parametrize("token", [B_TOKEN, B_AGENT, A_AGENT], ids=["tenant-b", "agent-of-b", "agent-of-a"])
async def test_every_endpoint_answers_for_a_real_resource_as_for_a_made_up_one(world: World, token: str) -> None:
    operations_before = await world.db.fetchval("SELECT count(*) FROM operations WHERE tenant_id = $1", TENANT)
    walked = await walked_operations(world.gateway)
    assert len(walked) >= 14, walked
    for method, path in walked:
        for_real = await call(world, token, method, path, world.real)
        for_nothing = await call(world, token, method, path, world.made_up)
        where = f"{method} {path} with {token}: {for_real.text}"
        if token == A_AGENT and path == "/v1/vrrp-events":
            # A's own agent, reporting on A's HAVIP it is not attached to: its tenant's business.
            assert verdict(for_real) == (409, "VrrpReport.NotAttached"), where
            continue
        assert verdict(for_real) == verdict(for_nothing), where
        # 403 only says the token is of the wrong kind for the call (checked before any lookup); a
        # token of the right kind gets 404 for others' things, never 403.
        wrong_kind = (path == "/v1/vrrp-events") == (token == B_TOKEN)
        assert (for_real.status_code == 403) == wrong_kind, where
        if for_real.status_code < 400:
            # Only calls that name nothing of A's may succeed: B's own list and create.
            assert (method, path) in (("GET", "/v1/havips"), ("POST", "/v1/havips")), where
            assert world.real["havip_id"] not in for_real.text, where
    # Nothing of A's changed: no operation was recorded for A, the HAVIP is as it was, the token works.
    assert await world.db.fetchval("SELECT count(*) FROM operations WHERE tenant_id = $1", TENANT) == operations_before
    havip = (await world.gateway.get(f"/v1/havips/{world.real['havip_id']}", headers=auth(A_TOKEN))).json()
    assert [a["target_id"] for a in havip["attachments"]] == ["i-1"]
    assert [e["eip_id"] for e in havip["eips"]] == ["eip-a1"]
    tokens = await world.gateway.get("/v1/instances/i-1/agent-tokens", headers=auth(A_TOKEN))
    assert [t["revoked_at"] for t in tokens.json()["tokens"]] == [None]


async def test_b_creating_in_as_vswitch_fails_as_for_a_vswitch_nobody_has(world: World) -> None:
    codes = []
    for vswitch_id in ("vsw-a", "vsw-nowhere"):
        answer = await world.gateway.post("/v1/havips", json={"vswitch_id": vswitch_id}, headers=auth(B_TOKEN))
        assert answer.status_code == 202, answer.text
        operation = await wait_operation(world.gateway, B_TOKEN, answer.json()["operation"]["operation_id"])
        codes.append((operation["status"], operation["error"]["code"]))
    assert codes == [("Failed", "NotFound.VSwitch")] * 2


async def test_commands_produced_to_kafka_with_as_ids_fail_as_ones_naming_nothing(world: World) -> None:
    def commands(ids: dict[str, str], suffix: str) -> list[Message]:
        common = {"tenant_id": B_TENANT, "havip_id": ids["havip_id"]}
        return [
            AttachHaVip(command_id=f"ext-b-attach-{suffix}", target_id="i-2", **common),
            DetachHaVip(command_id=f"ext-b-detach-{suffix}", target_id=ids["target_id"], **common),
            AssociateEip(command_id=f"ext-b-eip-{suffix}", eip_id="eip-a2", **common),
            UnassociateEip(command_id=f"ext-b-uneip-{suffix}", eip_id=ids["eip_id"], **common),
            DeleteHaVip(command_id=f"ext-b-delete-{suffix}", **common),
            CreateHaVip(
                command_id=f"ext-b-create-{suffix}",
                tenant_id=B_TENANT,
                havip_id=f"havip-b-{suffix}",
                vswitch_id="vsw-a" if suffix == "real" else "vsw-nowhere",
            ),
        ]

    real, made_up = commands(world.real, "real"), commands(world.made_up, "made-up")
    async with Publisher(world.pipeline.settings) as publisher:
        for command in (*real, *made_up):
            await publisher.send(topics.COMMANDS, command.havip_id, command)  # type: ignore[attr-defined]  # Message: a command here
    for for_real, for_nothing in zip(real, made_up, strict=True):
        real_outcome = await wait_operation(world.gateway, B_TOKEN, for_real.command_id)  # type: ignore[attr-defined]  # Message: a command here
        nothing_outcome = await wait_operation(world.gateway, B_TOKEN, for_nothing.command_id)  # type: ignore[attr-defined]  # Message: a command
        assert real_outcome["status"] == "Failed", real_outcome
        assert real_outcome["error"]["code"] == nothing_outcome["error"]["code"], (real_outcome, nothing_outcome)
        assert real_outcome["error"]["code"].startswith("NotFound."), real_outcome
        # A sees none of B's operations, even on its own HAVIP.
        hidden = await world.gateway.get(f"/v1/operations/{for_real.command_id}", headers=auth(A_TOKEN))  # type: ignore[attr-defined]  # a command
        assert hidden.status_code == 404
    havip = (await world.gateway.get(f"/v1/havips/{world.real['havip_id']}", headers=auth(A_TOKEN))).json()
    assert [a["target_id"] for a in havip["attachments"]] == ["i-1"] and havip["status"] == "InUse"
