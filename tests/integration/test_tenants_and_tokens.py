"""Tenants and their tokens: the admin command line, agent tokens over the API, and request rates."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.admin.cli import register
from services.gateway import tenants, tokens
from services.quota.rules import Limits
from services.quota.tenant_limits import limits_for
from services.runtime.settings import Settings, load_settings
from tests.integration.test_gateway import running_gateway

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code, body
    assert set(body) == {"code", "message", "request_id"}
    return body


@pytest.fixture
async def gateway(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(settings) as client:
        yield client


async def seed_instance(db: asyncpg.Pool, instance_id: str, tenant_id: str, status: str = "Running") -> None:
    await db.execute(
        "INSERT INTO instances (instance_id, tenant_id, vpc_id, vswitch_id, private_ip, status, host_id, revision)"
        " VALUES ($1, $2, 'vpc-1', 'vsw-1', '192.168.1.11', $3, 'host-a', 1)",
        instance_id,
        tenant_id,
        status,
    )


async def new_tenant(db: asyncpg.Pool, name: str, requests_per_second: float | None = None) -> tuple[str, str]:
    tenant = await tenants.create_tenant(db, name, requests_per_second=requests_per_second)
    issued = await tokens.issue_token(db, "tenant", tenant.tenant_id)
    return tenant.tenant_id, issued.token


def report(seq: int) -> dict[str, Any]:
    return {"havip_id": "havip-none", "state": "MASTER", "priority": 100, "seq": seq, "lease_seconds": 3}


# --- the admin command line --------------------------------------------------------------------


@pytest.fixture
def admin(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Run `havip admin ...` through its argparse entry; answers (exit status, stdout, stderr)."""
    monkeypatch.setenv("HAVIP_DATABASE_URL", settings.database_url)
    load_settings.cache_clear()
    parser = argparse.ArgumentParser(prog="havip")
    register(parser.add_subparsers(dest="command", required=True))

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        args = parser.parse_args(["admin", *argv])
        # The command runs its own event loop, as it does from a shell.
        status = await asyncio.to_thread(args.func, args)
        out, err = capsys.readouterr()
        return status, out, err

    yield run
    load_settings.cache_clear()


async def test_admin_creates_a_tenant_whose_token_works(
    admin: Any, gateway: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    status, out, _ = await admin(
        "tenant", "create", "acme", "--max-havips", "3", "--max-eips-per-havip", "0", "--output", "json"
    )
    assert status == 0
    created = json.loads(out)
    tenant_id, token = created["tenant"]["tenant_id"], created["token"]["token"]
    assert tenant_id.startswith("tenant-")
    assert created["limits"] == {
        "attachments_per_havip": 10,
        "havips_per_instance": 5,
        "eips_per_havip": 0,
        "havips": 3,
    }
    answer = await gateway.get("/v1/havips", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["havips"] == []

    # The limits are quota's, read through its own functions.
    limits = await limits_for(db, tenant_id, Limits())
    assert (limits.havips, limits.eips_per_havip, limits.attachments_per_havip) == (3, 0, 10)
    # Only the hash is stored.
    stored = await db.fetch("SELECT * FROM api_tokens")
    assert token not in repr([dict(row) for row in stored])

    status, out, _ = await admin("tenant", "create", "beta", "--tenant-id", "tenant-beta")
    assert status == 0
    assert "tenant_id: tenant-beta" in out and "token: hvt-" in out and "max_havips: 100" in out

    status, out, err = await admin("tenant", "create", "acme")
    assert (status, out) == (1, "")
    assert err.count("\n") == 1 and "acme" in err and "already exists" in err
    status, _, err = await admin("tenant", "create", "other", "--tenant-id", "tenant-beta")
    assert status == 1 and "tenant-beta" in err

    status, out, _ = await admin("tenant", "list", "--output", "json")
    assert [t["name"] for t in json.loads(out)["tenants"]] == ["acme", "beta"]

    status, out, _ = await admin(
        "tenant", "set-limits", tenant_id, "--max-havips", "default", "--max-havips-per-instance", "2",
        "--requests-per-second", "7.5", "--output", "json",
    )  # fmt: skip
    assert status == 0
    changed = json.loads(out)
    assert changed["tenant"]["requests_per_second"] == 7.5
    assert changed["limits"]["havips"] == settings.max_havips_per_tenant
    assert changed["limits"]["havips_per_instance"] == 2
    assert changed["limits"]["eips_per_havip"] == 0  # untouched
    status, out, _ = await admin("tenant", "set-limits", tenant_id, "--requests-per-second", "default")
    assert status == 0 and "requests_per_second: default" in out
    assert (await admin("tenant", "set-limits", "tenant-nobody", "--max-havips", "1"))[0] == 1

    status, out, _ = await admin("token", "create", tenant_id, "--description", "ci", "--output", "json")
    assert status == 0
    second = json.loads(out)
    assert second["token"].startswith("hvt-") and second["description"] == "ci"
    assert (await gateway.get("/v1/havips", headers=bearer(second["token"]))).status_code == 200
    status, _, err = await admin("token", "create", "tenant-nobody")
    assert status == 1 and "tenant-nobody does not exist" in err

    status, out, _ = await admin("token", "list", tenant_id, "--output", "json")
    listed = json.loads(out)["tokens"]
    assert [t["token_id"] for t in listed] == [created["token"]["token_id"], second["token_id"]]
    assert all("token" not in t for t in listed) and token not in out and second["token"] not in out

    status, out, _ = await admin("token", "revoke", second["token_id"])
    assert status == 0 and f"revoked {second['token_id']}" in out
    assert_error(await gateway.get("/v1/havips", headers=bearer(second["token"])), 401, "Unauthorized")
    assert (await admin("token", "revoke", second["token_id"]))[0] == 0  # again: still revoked, fine
    assert (await admin("token", "revoke", "tok-nope"))[0] == 1
    assert (await gateway.get("/v1/havips", headers=bearer(token))).status_code == 200


USAGE_ERRORS = [
    ("tenant", "create", "x", "--max-havips", "-1"),
    ("tenant", "create", "x", "--max-havips", "default"),
    ("tenant", "set-limits", "t", "--requests-per-second", "0"),
    ("token",),
    ("tenant", "frobnicate"),
]


@pytest.mark.parametrize("argv", USAGE_ERRORS)
def test_admin_usage_errors_exit_2(argv: tuple[str, ...]) -> None:
    parser = argparse.ArgumentParser(prog="havip")
    register(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["admin", *argv])
    assert exited.value.code == 2


# --- agent tokens over the API -----------------------------------------------------------------


async def test_an_agent_token_reports_for_its_instance_until_revoked(
    gateway: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    tenant_id, tenant_token = await new_tenant(db, "acme")
    await seed_instance(db, "i-web1", tenant_id)
    await seed_instance(db, "i-web2", tenant_id)

    answer = await gateway.post(
        "/v1/instances/i-web1/agent-tokens", json={"description": "web1 keepalived"}, headers=bearer(tenant_token)
    )
    assert answer.status_code == 201, answer.text
    issued = answer.json()
    assert set(issued) == {"token_id", "token", "instance_id", "description", "created_at"}
    assert (issued["instance_id"], issued["description"]) == ("i-web1", "web1 keepalived")
    assert issued["token_id"].startswith("tok-") and issued["token"].startswith("hva-")
    agent = bearer(issued["token"])

    # It authenticates for VRRP reports (an unknown HAVIP is the next check)...
    assert_error(await gateway.post("/v1/vrrp-events", json=report(1), headers=agent), 404, "NotFound.HaVip")
    # ...and for nothing a tenant does.
    assert_error(await gateway.get("/v1/havips", headers=agent), 403, "Forbidden")
    assert_error(await gateway.get("/v1/instances/i-web1/agent-tokens", headers=agent), 403, "Forbidden")
    assert_error(await gateway.post("/v1/instances/i-web1/agent-tokens", headers=agent), 403, "Forbidden")

    # No body at all is fine too.
    plain = await gateway.post("/v1/instances/i-web1/agent-tokens", headers=bearer(tenant_token))
    assert plain.status_code == 201, plain.text
    assert plain.json()["description"] == ""
    other = await gateway.post("/v1/instances/i-web2/agent-tokens", headers=bearer(tenant_token))

    listed = await gateway.get("/v1/instances/i-web1/agent-tokens", headers=bearer(tenant_token))
    assert listed.status_code == 200
    views = listed.json()["tokens"]
    assert [v["token_id"] for v in views] == [issued["token_id"], plain.json()["token_id"]]
    assert all(set(v) == {"token_id", "instance_id", "description", "created_at", "revoked_at"} for v in views)
    assert issued["token"] not in listed.text

    # The database holds no secret in clear.
    dump = repr([dict(r) for r in await db.fetch("SELECT * FROM api_tokens")])
    assert issued["token"] not in dump and tenant_token not in dump

    # Another instance's path, an unknown id: the token is not found there.
    wrong_instance = f"/v1/instances/i-web2/agent-tokens/{issued['token_id']}"
    assert_error(await gateway.delete(wrong_instance, headers=bearer(tenant_token)), 404, "NotFound.Token")
    unknown = "/v1/instances/i-web1/agent-tokens/tok-nope"
    assert_error(await gateway.delete(unknown, headers=bearer(tenant_token)), 404, "NotFound.Token")

    path = f"/v1/instances/i-web1/agent-tokens/{issued['token_id']}"
    revoked = await gateway.delete(path, headers=bearer(tenant_token))
    assert revoked.status_code == 204 and revoked.content == b""
    # Revocation is immediate: the very next request is refused.
    assert_error(await gateway.post("/v1/vrrp-events", json=report(2), headers=agent), 401, "Unauthorized")
    assert (await gateway.delete(path, headers=bearer(tenant_token))).status_code == 204
    listed = (await gateway.get("/v1/instances/i-web1/agent-tokens", headers=bearer(tenant_token))).json()
    assert listed["tokens"][0]["revoked_at"] is not None and listed["tokens"][1]["revoked_at"] is None
    # The other tokens still work.
    still = bearer(other.json()["token"])
    assert_error(await gateway.post("/v1/vrrp-events", json=report(3), headers=still), 404, "NotFound.HaVip")


async def test_instances_that_are_not_the_tenants_are_not_found(gateway: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    tenant_id, tenant_token = await new_tenant(db, "acme")
    other_id, other_token = await new_tenant(db, "other")
    await seed_instance(db, "i-theirs", other_id)
    await seed_instance(db, "i-gone", tenant_id, status="Deleted")
    await seed_instance(db, "i-mine", tenant_id, status="Stopped")
    auth = bearer(tenant_token)

    for instance_id in ("i-theirs", "i-gone", "i-unknown"):
        path = f"/v1/instances/{instance_id}/agent-tokens"
        assert_error(await gateway.post(path, headers=auth), 404, "NotFound.Instance")
        assert_error(await gateway.get(path, headers=auth), 404, "NotFound.Instance")

    theirs = await gateway.post("/v1/instances/i-theirs/agent-tokens", headers=bearer(other_token))
    assert theirs.status_code == 201
    # Neither listed nor revocable by another tenant, even when the token id is known.
    token_path = f"/v1/instances/i-theirs/agent-tokens/{theirs.json()['token_id']}"
    assert_error(await gateway.delete(token_path, headers=auth), 404, "NotFound.Token")

    mine = await gateway.post("/v1/instances/i-mine/agent-tokens", headers=auth)
    assert mine.status_code == 201  # a stopped instance still has an agent to come back
    assert_error(
        await gateway.post("/v1/instances/i-mine/agent-tokens", json={"description": "x" * 129}, headers=auth),
        400,
        "InvalidParameter",
    )
    assert_error(
        await gateway.post("/v1/instances/i-mine/agent-tokens", json={"descripton": "typo"}, headers=auth),
        400,
        "InvalidParameter",
    )
    assert_error(await gateway.post("/v1/instances/bad%20id/agent-tokens", headers=auth), 400, "InvalidParameter")


async def test_idempotent_issue_answers_the_first_token_again(gateway: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    tenant_id, tenant_token = await new_tenant(db, "acme")
    second_token = (await tokens.issue_token(db, "tenant", tenant_id)).token
    await seed_instance(db, "i-web1", tenant_id)
    path = "/v1/instances/i-web1/agent-tokens"
    headers = {**bearer(tenant_token), "Idempotency-Key": "issue-1"}

    first = await gateway.post(path, json={"description": "a"}, headers=headers)
    again = await gateway.post(path, json={"description": "a"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert await db.fetchval("SELECT count(*) FROM api_tokens WHERE instance_id = 'i-web1'") == 1
    # The stored answer holds neither the secret, nor the caller's token, nor readable JSON.
    sealed = await db.fetchval("SELECT sealed_body FROM idempotent_answers WHERE idempotency_key = 'issue-1'")
    for clear in (first.json()["token"], tenant_token, first.json()["token_id"]):
        assert clear.encode() not in sealed

    mismatch = await gateway.post(path, json={"description": "b"}, headers=headers)
    assert_error(mismatch, 409, "IdempotentParameterMismatch")
    # Another token of the same tenant cannot open the first caller's answer.
    other_caller = {**bearer(second_token), "Idempotency-Key": "issue-1"}
    assert_error(
        await gateway.post(path, json={"description": "a"}, headers=other_caller), 409, "IdempotentParameterMismatch"
    )

    # Identical requests racing: one token, one answer for all.
    racing = {**bearer(tenant_token), "Idempotency-Key": "issue-race"}
    answers = await asyncio.gather(*(gateway.post(path, headers=racing) for _ in range(6)))
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({(a.json()["token_id"], a.json()["token"]) for a in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM api_tokens WHERE instance_id = 'i-web1'") == 2

    # A refusal is not remembered: the same key works once the instance exists.
    late = {**bearer(tenant_token), "Idempotency-Key": "issue-late"}
    assert_error(await gateway.post("/v1/instances/i-late/agent-tokens", headers=late), 404, "NotFound.Instance")
    await seed_instance(db, "i-late", tenant_id)
    assert (await gateway.post("/v1/instances/i-late/agent-tokens", headers=late)).status_code == 201

    token_path = f"{path}/{first.json()['token_id']}"
    revoke = {**bearer(tenant_token), "Idempotency-Key": "revoke-1"}
    assert (await gateway.delete(token_path, headers=revoke)).status_code == 204
    assert (await gateway.delete(token_path, headers=revoke)).status_code == 204
    assert_error(await gateway.delete(f"{path}/tok-other", headers=revoke), 409, "IdempotentParameterMismatch")


# --- request rates -----------------------------------------------------------------------------


async def test_a_tenant_over_its_rate_is_throttled_with_retry_after(
    gateway: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    _, slow_token = await new_tenant(db, "slow", requests_per_second=1)
    _, other_token = await new_tenant(db, "neighbour")
    # Unauthenticated calls count against nobody.
    for _ in range(50):
        assert_error(await gateway.get("/v1/havips", headers=bearer("not-a-token")), 401, "Unauthorized")

    answers = [await gateway.get("/v1/havips", headers=bearer(slow_token)) for _ in range(6)]
    statuses = [a.status_code for a in answers]
    assert statuses[0] == 200 and 429 in statuses, statuses
    throttled = next(a for a in answers if a.status_code == 429)
    assert_error(throttled, 429, "Throttling")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 1
    # Another tenant is not slowed by it.
    assert (await gateway.get("/v1/havips", headers=bearer(other_token))).status_code == 200


async def test_an_agent_renewing_its_claims_is_not_throttled(gateway: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    tenant_id, _ = await new_tenant(db, "acme", requests_per_second=1)
    agent = bearer((await tokens.issue_token(db, "agent", tenant_id, "i-web1")).token)
    started = asyncio.get_running_loop().time()
    answers = [await gateway.post("/v1/vrrp-events", json=report(seq), headers=agent) for seq in range(40)]
    assert {a.json()["code"] for a in answers} == {"NotFound.HaVip"}
    assert asyncio.get_running_loop().time() - started < 5
