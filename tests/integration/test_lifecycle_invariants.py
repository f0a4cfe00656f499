"""Random tenant programs against the whole pipeline, then the invariants the platform promises.

Two tenants, each with its own VPC and vSwitch, four instances and two EIPs, and
small limits (2 attachments per HAVIP, 2 HAVIPs per instance, 1 EIP per HAVIP,
3 HAVIPs per tenant) so every limit is actually reached. Hypothesis draws
programs: creates (with or without an address, sometimes one already taken),
attaches, detaches, deletes, EIP associations and releases, by either tenant,
sometimes on the other tenant's HAVIPs, instances, EIPs or vSwitch, sometimes
sent twice with one Idempotency-Key, sometimes a group sent at once; and
attaches of an instance the mapping service's inventory copy says was deleted
(quota accepts, mapping refuses, quota must release the reservation).

After every step and every program, against Postgres:
1. settled (nothing Pending, outbox empty), quota's ledger equals the mapping tables;
2. no limit is exceeded, in either; live addresses are unique; an EIP is on one HAVIP at most;
3. every operation is terminal exactly once, with a known error code when Failed, and
   is stored as it was observed;
4. actions on another tenant's resources fail with NotFound.* (at the API or downstream);
5. a command the mapping service refused released its reservation (follows from 1).

How hypothesis runs here: `@given` on an `async def` test. pytest-asyncio 1.x
wraps hypothesis' inner test and runs each example as a coroutine in the test's
loop, which (pyproject: asyncio_default_test_loop_scope = "session") is the
loop the module-scoped `platform` fixture lives in, so one platform serves all
examples. Between examples the test resets through the API itself (releases,
detaches, deletes everything), which exercises the pipeline once more.
Each example takes about a second, so a failure shrinks slowly (hypothesis gives
up shrinking after five minutes); the failure's notes carry the program and what
each action answered, since hypothesis cannot print arguments pytest-asyncio passes.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.errors import ErrorCode
from schemas.messages import EipChanged, InstanceChanged, InstanceStatus, VSwitchChanged
from services.dev.processes import ServiceProcess
from services.gateway.tokens import Principal, store_token
from services.runtime.db import connect_pool
from services.runtime.settings import Settings
from tests.conftest import Infra, fresh_settings
from tests.inventory_tools import TENANT, Publisher

pytestmark = pytest.mark.integration

LIMITS = {
    "max_attachments_per_havip": 2,
    "max_havips_per_instance": 2,
    "max_eips_per_havip": 1,
    "max_havips_per_tenant": 3,
}
# Programs per run: enough that every rule meets every other in CI (the explicit examples pin the
# known hard cases); HAVIP_INVARIANT_EXAMPLES=500 for a long hunt.
MAX_EXAMPLES = int(os.environ.get("HAVIP_INVARIANT_EXAMPLES", "25"))
OPERATION_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Side:
    """One tenant and its inventory."""

    name: str
    tenant_id: str
    token: str
    vpc_id: str
    vswitch_id: str
    prefix: str  # the vSwitch is {prefix}.0/24
    instances: tuple[str, ...]
    eips: tuple[tuple[str, str], ...]

    def instance_ip(self, index: int) -> str:
        return f"{self.prefix}.{101 + index}"

    def address(self, index: int) -> str:
        """Explicit addresses a create may ask for; the last one is an instance's (always InUse)."""
        return (f"{self.prefix}.10", f"{self.prefix}.11", f"{self.prefix}.12", self.instance_ip(0))[index]


SIDES = (
    Side(
        "A",
        TENANT,
        "tok-invariants-a",
        "vpc-t",
        "vsw-a",
        "10.1.0",
        tuple(f"i-{n}" for n in range(1, 5)),
        (("eip-a1", "203.0.113.21"), ("eip-a2", "203.0.113.22")),
    ),
    Side(
        "B",
        "tenant-invariants-b",
        "tok-invariants-b",
        "vpc-b",
        "vsw-b",
        "10.2.0",
        tuple(f"ib-{n}" for n in range(1, 5)),
        (("eip-b1", "203.0.113.31"), ("eip-b2", "203.0.113.32")),
    ),
)
KNOWN_CODES = {code.value for code in ErrorCode} - {ErrorCode.INTERNAL_ERROR.value, ErrorCode.APPLY_FAILED.value}


def inventory_of(side: Side) -> list[Any]:
    messages: list[Any] = [
        VSwitchChanged(
            vswitch_id=side.vswitch_id,
            tenant_id=side.tenant_id,
            vpc_id=side.vpc_id,
            zone_id="zone-1",
            cidr=f"{side.prefix}.0/24",
            revision=1,
        )
    ]
    for index, instance_id in enumerate(side.instances):
        messages.append(
            InstanceChanged(
                instance_id=instance_id,
                tenant_id=side.tenant_id,
                vpc_id=side.vpc_id,
                vswitch_id=side.vswitch_id,
                private_ip=side.instance_ip(index),
                status=InstanceStatus.RUNNING,
                host_id=f"host-{index % 3}",
                revision=1,
            )
        )
    for eip_id, ip in side.eips:
        messages.append(EipChanged(eip_id=eip_id, tenant_id=side.tenant_id, ip_address=ip, revision=1))
    return messages


@dataclass
class Platform:
    settings: Settings
    db: asyncpg.Pool
    gateway: httpx.AsyncClient


@pytest.fixture(scope="module")
async def platform(infra: Infra, workdir: Path) -> AsyncIterator[Platform]:
    settings = (await fresh_settings(infra)).model_copy(
        # Small limits, so programs reach them; no throttling of the test's own requests.
        update={**LIMITS, "tenant_requests_per_second": 1000.0, "tenant_request_burst": 2000}
    )
    logs = workdir / f"invariants-{settings.topic_prefix}logs"
    logs.mkdir()
    db = await connect_pool(settings.database_url, max_size=10)
    for side in SIDES:
        await store_token(db, side.token, Principal("tenant", side.tenant_id))
    async with Publisher(settings) as publisher:
        for side in SIDES:
            await publisher.inventory(inventory_of(side))
    services = [ServiceProcess(name, settings, logs).start() for name in ("quota", "mapping", "forwarder", "gateway")]
    try:
        for service in services:
            await asyncio.to_thread(service.wait_ready)
        instances = sum(len(side.instances) for side in SIDES)
        eips = sum(len(side.eips) for side in SIDES)

        async def inventory_loaded() -> bool:
            counts = await db.fetchrow(
                "SELECT (SELECT count(*) FROM instances) AS i, (SELECT count(*) FROM quota_instances) AS qi,"
                " (SELECT count(*) FROM eips) AS e, (SELECT count(*) FROM quota_eips) AS qe,"
                " (SELECT count(*) FROM vswitches) AS v, (SELECT count(*) FROM quota_vswitches) AS qv"
            )
            return tuple(counts) == (instances, instances, eips, eips, len(SIDES), len(SIDES))

        await eventually(inventory_loaded, "both inventory copies loaded")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.gateway_port}", timeout=60) as gateway:
            yield Platform(settings, db, gateway)
    finally:
        for service in services:
            service.stop()
        await db.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = SETTLE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not in {timeout:.0f}s: {what}"
        await asyncio.sleep(0.1)


# --- programs ---------------------------------------------------------------

KINDS = ("create", "attach", "detach", "delete", "associate_eip", "release_eip")


@dataclass(frozen=True)
class Action:
    kind: str
    actor: int  # index into SIDES
    havip_side: int  # whose HAVIP (slot) it names
    slot: int  # which of that tenant's HAVIPs created in this program (modulo their number)
    resource_side: int  # whose instance / EIP / vSwitch it names
    resource: int | None  # instance index, EIP index, or the create's address index (None: none named)
    poison: bool = False  # attach while the mapping service's copy says the instance was deleted
    dup: str | None = None  # "concurrent": sent twice at once; "replay": sent again once terminal

    @property
    def cross_tenant(self) -> bool:
        if self.kind == "create":
            return self.resource_side != self.actor
        if self.havip_side != self.actor:
            return True
        names_resource = self.kind in ("attach", "detach", "associate_eip") or (
            self.kind == "release_eip" and self.resource is not None
        )
        return names_resource and self.resource_side != self.actor

    def __repr__(self) -> str:
        actor = SIDES[self.actor].name
        havip = f"{SIDES[self.havip_side].name}.h{self.slot}"
        res = SIDES[self.resource_side]
        match self.kind:
            case "create":
                where = res.vswitch_id
                text = f"create({where}{'' if self.resource is None else ', ' + res.address(self.resource)})"
            case "attach" | "detach":
                assert self.resource is not None
                text = f"{self.kind}({havip}, {res.instances[self.resource]})"
            case "associate_eip":
                assert self.resource is not None
                text = f"associate_eip({havip}, {res.eips[self.resource][0]})"
            case "release_eip":
                eip = "" if self.resource is None else ", " + res.eips[self.resource][0]
                text = f"release_eip({havip}{eip})"
            case _:
                text = f"{self.kind}({havip})"
        flags = "".join(f" +{flag}" for flag in (self.poison and "poison", self.dup) if flag)
        return f"{actor}:{text}{flags}"


def _rarely(one_in: int) -> st.SearchStrategy[bool]:
    # Shrinks towards False (0), so a shrunk program keeps only the rare twists it needs.
    return st.integers(0, one_in - 1).map(lambda n: n == one_in - 1)


def _a(kind: str, slot: int = 0, resource: int | None = None, **twists: Any) -> Action:
    """Tenant A acting on its own resources, unless told otherwise."""
    fields = {"actor": 0, "havip_side": 0, "resource_side": 0, "poison": False, "dup": None, **twists}
    return Action(kind, slot=slot, resource=resource, **fields)


@st.composite
def actions(draw: st.DrawFn, *, kinds: tuple[str, ...] = KINDS, cross: bool = True) -> Action:
    kind = draw(st.sampled_from(kinds))
    actor = draw(st.integers(0, 1))
    havip_side = 1 - actor if cross and draw(_rarely(10)) else actor
    resource_side = 1 - actor if cross and draw(_rarely(7)) else actor
    slot = draw(st.just(0) | st.integers(0, 3))  # the first HAVIP more often, so it reaches its limits
    resource: int | None
    match kind:
        case "create":
            resource = draw(st.none() | st.integers(0, 3))
        case "attach" | "detach":
            # The first instance more often, so it reaches its limit of HAVIPs.
            resource = draw(st.just(0) | st.integers(0, 3))
        case "associate_eip":
            resource = draw(st.integers(0, 1))
        case _:
            resource = draw(st.none() | st.integers(0, 1))
    poison = kind == "attach" and resource_side == actor and draw(_rarely(4))
    dup = draw(st.sampled_from((None, None, None, None, None, "concurrent", "replay")))
    return Action(kind, actor, havip_side, slot, resource_side, resource, poison, dup)


# Weighted towards attaching, so the attachment limits are reached.
WEIGHTED_KINDS = ("create", "attach", "attach", "attach", "detach", "delete", "associate_eip", "release_eip")


@st.composite
def fan_outs(draw: st.DrawFn) -> tuple[Action, ...]:
    """One instance onto three HAVIPs, or three instances onto one HAVIP, all at once: limits under a race."""
    side = draw(st.integers(0, 1))
    fixed = draw(st.integers(0, 3))
    pairs = [(n, fixed) for n in range(3)] if draw(st.booleans()) else [(fixed, n) for n in range(3)]
    return tuple(_a("attach", slot, index, actor=side, havip_side=side, resource_side=side) for slot, index in pairs)


steps = st.one_of(
    actions(kinds=WEIGHTED_KINDS).map(lambda a: (a,)),
    actions(kinds=WEIGHTED_KINDS).map(lambda a: (a,)),
    st.lists(actions(kinds=WEIGHTED_KINDS), min_size=2, max_size=4).map(tuple),
    fan_outs(),
)
programs = st.tuples(
    # A burst of creates at once, at least one per tenant (four by one tenant meet its limit of three) ...
    st.lists(actions(kinds=("create",), cross=False), max_size=4).map(
        lambda more: (_a("create"), _a("create", actor=1, havip_side=1, resource_side=1), *more)
    ),
    # ... then steps, each one action or a group sent at once.
    st.lists(steps, min_size=4, max_size=14),
)


# One program written out, run first: it reaches every limit, and every twist, whatever is drawn after it.
EVERY_CASE = (
    (_a("create"), _a("create", resource=0), _a("create")),
    [
        (_a("create"),),  # the fourth: QuotaExceeded.HaVip
        (_a("attach", 0, 0),),
        (_a("attach", 0, 1, dup="concurrent"),),
        (_a("attach", 0, 2),),  # QuotaExceeded.HaVipAssociation
        (_a("attach", 1, 0),),
        (_a("attach", 2, 0),),  # QuotaExceeded.InstanceHaVip
        (_a("associate_eip", 0, 0),),
        (_a("associate_eip", 0, 1, dup="replay"),),  # QuotaExceeded.HaVipEip
        (_a("attach", 0, 0, actor=1, resource_side=1),),  # B on A's HAVIP: NotFound.HaVip
        (_a("attach", 1, 1, resource_side=1), _a("associate_eip", 1, 0, resource_side=1)),  # B's instance and EIP
        (_a("attach", 2, 3, poison=True),),  # quota accepts, mapping refuses: released again
        (_a("attach", 2, 3), _a("release_eip", 0), _a("detach", 0, 1)),
    ],
)

# --- running a program -------------------------------------------------------


@dataclass
class Outcome:
    action: Action
    http_status: int
    code: str | None  # the API's error code, or the operation's
    operation_id: str | None = None
    status: str | None = None  # the terminal status observed


@dataclass
class Run:
    created: list[list[str]] = field(default_factory=lambda: [[], []])  # HAVIPs created (Succeeded), by side
    live: list[list[str]] = field(default_factory=lambda: [[], []])  # ... and not deleted since
    observed: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)  # op -> status, code, tenant
    outcomes: list[Outcome] = field(default_factory=list)


def auth(side: Side) -> dict[str, str]:
    return {"Authorization": f"Bearer {side.token}"}


async def wait_operation(gateway: httpx.AsyncClient, side: Side, operation_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + OPERATION_TIMEOUT
    while True:
        answer = await gateway.get(f"/v1/operations/{operation_id}", params={"wait": "5s"}, headers=auth(side))
        assert answer.status_code == 200, answer.text
        operation: dict[str, Any] = answer.json()
        if operation["status"] != "Pending":
            return operation
        assert time.monotonic() < deadline, f"operation {operation_id} still Pending after {OPERATION_TIMEOUT}s"


def resolve_havip(run: Run, side: int, slot: int) -> str:
    """Slots 0-2 name the tenant's live HAVIPs (while it has any), slot 3 any it created, deleted ones too."""
    for candidates in ([] if slot == 3 else run.live[side], run.created[side]):
        if candidates:
            return candidates[slot % len(candidates)]
    return f"havip-none-{SIDES[side].name.lower()}"


def request_of(action: Action, havip_id: str) -> tuple[str, str, dict[str, Any] | None, dict[str, str] | None]:
    res = SIDES[action.resource_side]
    match action.kind:
        case "create":
            body: dict[str, Any] = {"vswitch_id": res.vswitch_id}
            if action.resource is not None:
                body["ip_address"] = res.address(action.resource)
            return "POST", "/v1/havips", body, None
        case "attach":
            assert action.resource is not None
            return "POST", f"/v1/havips/{havip_id}/associations", {"instance_id": res.instances[action.resource]}, None
        case "detach":
            assert action.resource is not None
            return "DELETE", f"/v1/havips/{havip_id}/associations/{res.instances[action.resource]}", None, None
        case "delete":
            return "DELETE", f"/v1/havips/{havip_id}", None, None
        case "associate_eip":
            assert action.resource is not None
            return "PUT", f"/v1/havips/{havip_id}/eip", {"eip_id": res.eips[action.resource][0]}, None
        case "release_eip":
            params = None if action.resource is None else {"eip_id": res.eips[action.resource][0]}
            return "DELETE", f"/v1/havips/{havip_id}/eip", None, params
    raise AssertionError(action)


async def perform(platform: Platform, run: Run, action: Action, havip_id: str, deleting: set[str]) -> Outcome:
    side = SIDES[action.actor]
    method, path, body, params = request_of(action, havip_id)
    headers = {**auth(side), "Idempotency-Key": f"inv-{uuid.uuid4().hex}"}

    async def send() -> httpx.Response:
        for _ in range(20):
            answer = await platform.gateway.request(method, path, json=body, params=params, headers=headers)
            if answer.status_code != 503:  # the same key in flight at once: retry, as a client would
                return answer
            await asyncio.sleep(0.1)
        return answer

    poisoned = None
    if action.poison:
        assert action.resource is not None
        poisoned = SIDES[action.resource_side].instances[action.resource]
        await platform.db.execute("UPDATE instances SET status = 'Deleted' WHERE instance_id = $1", poisoned)
    try:
        if action.dup == "concurrent":
            answer, again = sorted(await asyncio.gather(send(), send()), key=lambda r: r.status_code)
            check_same_answer(action, answer, again)
        else:
            answer = await send()
        if answer.status_code != 202:
            assert answer.status_code == 404, f"{action!r}: {answer.status_code} {answer.text}"
            code = answer.json()["code"]
            assert code in (ErrorCode.NOT_FOUND_HAVIP, ErrorCode.NOT_FOUND_EIP), f"{action!r}: {answer.text}"
            outcome = Outcome(action, 404, code)
        else:
            accepted = answer.json()
            operation_id = accepted["operation"]["operation_id"]
            operation = await wait_operation(platform.gateway, side, operation_id)
            if operation["status"] == "Succeeded" and action.kind == "create":
                run.created[action.actor].append(operation["havip_id"])
                run.live[action.actor].append(operation["havip_id"])
            if operation["status"] == "Succeeded" and action.kind == "delete":
                run.live[action.havip_side].remove(operation["havip_id"])
            error = operation.get("error")
            outcome = Outcome(action, 202, error["code"] if error else None, operation_id, operation["status"])
            record_observation(run, side, operation)
            if action.dup == "replay":
                again = await send()
                check_same_answer(action, answer, again)
                assert again.json()["operation"]["status"] == operation["status"], (action, again.text)
    finally:
        if poisoned is not None:
            await platform.db.execute("UPDATE instances SET status = 'Running' WHERE instance_id = $1", poisoned)
    check_outcome(outcome, deleting)
    run.outcomes.append(outcome)
    return outcome


def check_same_answer(action: Action, first: httpx.Response, second: httpx.Response) -> None:
    """The same request with the same Idempotency-Key: the same operation (and HAVIP) again."""
    assert first.status_code == second.status_code, (action, first.text, second.text)
    if first.status_code == 202:
        one, two = first.json(), second.json()
        assert one["operation"]["operation_id"] == two["operation"]["operation_id"], (action, one, two)
        if action.kind == "create":
            assert one["havip"]["havip_id"] == two["havip"]["havip_id"], (action, one, two)
    else:
        assert first.json()["code"] == second.json()["code"], (action, first.text, second.text)


def record_observation(run: Run, side: Side, operation: dict[str, Any]) -> None:
    status = operation["status"]
    error = operation.get("error")
    code = error["code"] if error else None
    assert status in ("Succeeded", "Failed"), operation
    assert (status == "Failed") == (code is not None), operation
    if code is not None:
        assert code in KNOWN_CODES, operation
    seen = (status, code, side.tenant_id)
    earlier = run.observed.setdefault(operation["operation_id"], seen)
    assert earlier == seen, f"operation changed after it was terminal: {earlier} then {seen}"


def check_outcome(outcome: Outcome, deleting: set[str]) -> None:
    """Invariant 4: another tenant's resources behave as if they did not exist."""
    if not outcome.action.cross_tenant:
        return
    assert outcome.status != "Succeeded", f"a cross-tenant action succeeded: {outcome}"
    assert outcome.code is not None
    if outcome.code.startswith("NotFound."):
        return
    # The one code that may come first: the actor's own HAVIP being deleted by the same step.
    assert outcome.code == ErrorCode.HAVIP_STATUS and deleting, f"a cross-tenant action answered {outcome}"


async def run_step(platform: Platform, run: Run, step: tuple[Action, ...]) -> None:
    # HAVIP slots are resolved when the step starts: only earlier steps' creates count.
    targets = [resolve_havip(run, action.havip_side, action.slot) for action in step]
    deleting = {havip_id for action, havip_id in zip(step, targets, strict=True) if action.kind == "delete"}
    await asyncio.gather(*(perform(platform, run, a, h, deleting) for a, h in zip(step, targets, strict=True)))


# --- the invariants ----------------------------------------------------------

_LIMIT_VIOLATIONS = """
SELECT 'quota: attachments of ' || havip_id || ' = ' || count(*) FROM quota_attachments
 GROUP BY havip_id HAVING count(*) > $1
UNION ALL SELECT 'quota: HAVIPs of instance ' || instance_id || ' = ' || count(DISTINCT havip_id) FROM quota_attachments
 GROUP BY instance_id HAVING count(DISTINCT havip_id) > $2
UNION ALL SELECT 'quota: EIPs of ' || havip_id || ' = ' || count(*) FROM quota_havip_eips
 GROUP BY havip_id HAVING count(*) > $3
UNION ALL SELECT 'quota: HAVIPs of tenant ' || tenant_id || ' = ' || count(*) FROM quota_havips
 GROUP BY tenant_id HAVING count(*) > $4
UNION ALL SELECT 'quota: address ' || vpc_id || '/' || host(ip_address) || ' held ' || count(*) || ' times'
  FROM quota_havips GROUP BY vpc_id, ip_address HAVING count(*) > 1
UNION ALL SELECT 'mapping: attachments of ' || havip_id || ' = ' || count(*) FROM attachments
 GROUP BY havip_id HAVING count(*) > $1
UNION ALL SELECT 'mapping: HAVIPs of instance ' || instance_id || ' = ' || count(DISTINCT havip_id) FROM attachments
 GROUP BY instance_id HAVING count(DISTINCT havip_id) > $2
UNION ALL SELECT 'mapping: EIPs of ' || havip_id || ' = ' || count(*) FROM havip_eips
 GROUP BY havip_id HAVING count(*) > $3
UNION ALL SELECT 'mapping: live HAVIPs of tenant ' || tenant_id || ' = ' || count(*) FROM havips
 WHERE status <> 'Deleted' GROUP BY tenant_id HAVING count(*) > $4
UNION ALL SELECT 'mapping: live address ' || vpc_id || '/' || host(ip_address) || ' held ' || count(*) || ' times'
  FROM havips WHERE status <> 'Deleted' GROUP BY vpc_id, ip_address HAVING count(*) > 1
UNION ALL SELECT 'mapping: EIP ' || eip_id || ' on ' || count(*) || ' HAVIPs' FROM havip_eips
 GROUP BY eip_id HAVING count(*) > 1
UNION ALL SELECT 'quota: EIP ' || eip_id || ' on ' || count(*) || ' HAVIPs' FROM quota_havip_eips
 GROUP BY eip_id HAVING count(*) > 1
UNION ALL SELECT 'mapping: ' || a.target_id || ' of another tenant or vSwitch on ' || h.havip_id
  FROM attachments a JOIN havips h USING (havip_id) JOIN instances i ON i.instance_id = a.instance_id
 WHERE i.tenant_id <> h.tenant_id OR i.vswitch_id <> h.vswitch_id
UNION ALL SELECT 'mapping: EIP ' || x.eip_id || ' of another tenant on ' || h.havip_id
  FROM havip_eips x JOIN havips h USING (havip_id) JOIN eips e ON e.eip_id = x.eip_id WHERE e.tenant_id <> h.tenant_id
UNION ALL SELECT 'mapping: deleted ' || h.havip_id || ' still has attachments or EIPs' FROM havips h
 WHERE h.status = 'Deleted' AND (EXISTS (SELECT 1 FROM attachments a WHERE a.havip_id = h.havip_id)
    OR EXISTS (SELECT 1 FROM havip_eips x WHERE x.havip_id = h.havip_id))
UNION ALL SELECT 'mapping: ' || h.havip_id || ' is ' || h.status || ' with '
       || (SELECT count(*) FROM attachments a WHERE a.havip_id = h.havip_id) || ' attachments' FROM havips h
 WHERE h.status <> 'Deleted'
   AND (h.status = 'InUse') <> EXISTS (SELECT 1 FROM attachments a WHERE a.havip_id = h.havip_id)
"""


async def limit_violations(db: asyncpg.Pool) -> list[str]:
    """Invariant 2 (and the tables' own consistency): holds at every moment, settled or not."""
    rows = await db.fetch(
        _LIMIT_VIOLATIONS,
        LIMITS["max_attachments_per_havip"],
        LIMITS["max_havips_per_instance"],
        LIMITS["max_eips_per_havip"],
        LIMITS["max_havips_per_tenant"],
    )
    return [row[0] for row in rows]


async def ledger_and_mapping(db: asyncpg.Pool) -> dict[str, tuple[set[tuple[str, ...]], set[tuple[str, ...]]]]:
    """Invariant 1: (quota's view, the mapping tables' view) of each kind of reservation."""
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        pairs = {
            "havips": (
                "SELECT havip_id, tenant_id, vpc_id, host(ip_address), coalesce(deleting_command_id, '')"
                " FROM quota_havips",
                "SELECT havip_id, tenant_id, vpc_id, host(ip_address), '' FROM havips WHERE status <> 'Deleted'",
            ),
            "attachments": (
                "SELECT havip_id, target_id, instance_id FROM quota_attachments",
                "SELECT havip_id, target_id, instance_id FROM attachments",
            ),
            "eips": (
                "SELECT eip_id, havip_id FROM quota_havip_eips",
                "SELECT eip_id, havip_id FROM havip_eips",
            ),
        }
        return {
            name: (
                {tuple(row) for row in await conn.fetch(quota)},
                {tuple(row) for row in await conn.fetch(mapping)},
            )
            for name, (quota, mapping) in pairs.items()
        }


async def settle(platform: Platform, program: object) -> None:
    """Wait until nothing is in flight and quota's ledger matches the mapping tables (invariant 1)."""
    db = platform.db

    async def quiet() -> bool:
        pending = await db.fetchval("SELECT count(*) FROM operations WHERE status = 'Pending'")
        outbox = await db.fetchval("SELECT count(*) FROM command_outbox")
        return pending == 0 and outbox == 0

    await eventually(quiet, "no Pending operation and an empty outbox")
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        views = await ledger_and_mapping(db)
        differences = {name: (quota - mapping, mapping - quota) for name, (quota, mapping) in views.items()}
        if not any(only_quota or only_mapping for only_quota, only_mapping in differences.values()):
            return
        if time.monotonic() > deadline:
            lines = [f"quota's ledger and the mapping tables disagree after {SETTLE_TIMEOUT:.0f}s; program {program}"]
            for name, (only_quota, only_mapping) in differences.items():
                lines.append(f"  {name}: only in quota {sorted(only_quota)}; only in mapping {sorted(only_mapping)}")
                lines.append(f"  {name}: quota {sorted(views[name][0])}; mapping {sorted(views[name][1])}")
            raise AssertionError("\n".join(lines))
        await asyncio.sleep(0.1)


async def check_operations(platform: Platform, run: Run) -> None:
    """Invariant 3: every operation terminal, once, stored as observed."""
    rows = await platform.db.fetch("SELECT operation_id, tenant_id, status, error_code, havip_id, kind FROM operations")
    stored = {row["operation_id"]: row for row in rows}
    for row in rows:
        assert row["status"] in ("Succeeded", "Failed"), dict(row)
        assert (row["status"] == "Failed") == (row["error_code"] is not None), dict(row)
    for operation_id, seen in run.observed.items():
        row = stored.get(operation_id)
        assert row is not None, f"observed operation {operation_id} is not stored"
        assert (row["status"], row["error_code"], row["tenant_id"]) == seen, (dict(row), seen)
    # A Succeeded operation's HAVIP is the mapping service's, and the operation's tenant's.
    strays = await platform.db.fetch(
        "SELECT o.operation_id, o.kind, o.havip_id FROM operations o LEFT JOIN havips h ON h.havip_id = o.havip_id"
        " WHERE o.status = 'Succeeded' AND (h.havip_id IS NULL OR h.tenant_id <> o.tenant_id)"
    )
    assert not strays, [dict(row) for row in strays]


async def check_all(platform: Platform, run: Run, program: object) -> None:
    await settle(platform, program)
    violations = await limit_violations(platform.db)
    assert not violations, f"{violations}; program {program}"
    await check_operations(platform, run)


# --- resetting between programs ------------------------------------------------


async def reset(platform: Platform, run: Run) -> None:
    """Release, detach and delete everything through the API, then wait for quota to let go of it all."""

    async def submit(side: Side, method: str, path: str, params: dict[str, str] | None = None) -> None:
        answer = await platform.gateway.request(method, path, params=params, headers=auth(side))
        assert answer.status_code == 202, f"reset: {method} {path}: {answer.status_code} {answer.text}"
        operation = await wait_operation(platform.gateway, side, answer.json()["operation"]["operation_id"])
        record_observation(run, side, operation)
        assert operation["status"] == "Succeeded", f"reset: {method} {path}: {operation}"

    async def clear(side: Side) -> bool:
        answer = await platform.gateway.get("/v1/havips", params={"page_size": 100}, headers=auth(side))
        assert answer.status_code == 200, answer.text
        havips = answer.json()["havips"]
        undo = []
        for havip in havips:
            base = f"/v1/havips/{havip['havip_id']}"
            undo += [submit(side, "DELETE", f"{base}/eip", {"eip_id": eip["eip_id"]}) for eip in havip["eips"]]
            undo += [submit(side, "DELETE", f"{base}/associations/{a['target_id']}") for a in havip["attachments"]]
        await asyncio.gather(*undo)
        await asyncio.gather(*(submit(side, "DELETE", f"/v1/havips/{havip['havip_id']}") for havip in havips))
        return bool(havips)

    while any(await asyncio.gather(*(clear(side) for side in SIDES))):
        pass

    async def released() -> bool:
        return not await platform.db.fetchval(
            "SELECT (SELECT count(*) FROM quota_havips) + (SELECT count(*) FROM quota_attachments)"
            " + (SELECT count(*) FROM quota_havip_eips)"
        )

    await eventually(released, "quota's ledger empty after the reset")


# --- the test ------------------------------------------------------------------

TOTALS: Counter[str] = Counter()


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # nothing written under the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(program=programs)
@example(program=EVERY_CASE)
async def test_random_programs_keep_the_invariants(
    platform: Platform, program: tuple[tuple[Action, ...], list[tuple[Action, ...]]]
) -> None:
    started = time.monotonic()
    burst, rest = program
    run = Run()
    try:
        for step in (burst, *rest):
            await run_step(platform, run, step)
            violations = await limit_violations(platform.db)
            assert not violations, f"after step {step}: {violations}"
        await check_all(platform, run, program)
        await reset(platform, run)
        await check_all(platform, run, program)
    except Exception as exc:
        # Hypothesis does not show this test's arguments (pytest-asyncio runs it), so the failure carries them.
        exc.add_note(f"program: {program!r}")
        happened = (f"  {o.action!r} -> {o.status or o.http_status} {o.code or ''}" for o in run.outcomes)
        exc.add_note("outcomes:\n" + "\n".join(happened))
        try:
            # Leave a clean platform for the next example (hypothesis shrinks by running more).
            await reset(platform, run)
        except Exception as also:
            exc.add_note(f"and the reset failed too: {also!r}")
        raise

    counts = Counter(o.status or f"API {o.http_status}" for o in run.outcomes)
    codes = Counter(o.code for o in run.outcomes if o.code)
    refusals = sum(o.action.poison and o.code == ErrorCode.INSTANCE_STATUS for o in run.outcomes)
    TOTALS.update(
        examples=1,
        actions=len(run.outcomes),
        cross_tenant=sum(o.action.cross_tenant for o in run.outcomes),
        duplicates=sum(o.action.dup is not None for o in run.outcomes),
        concurrent_steps=sum(len(step) > 1 for step in (burst, *rest)),
        mapping_refusals=refusals,
        **{f"code {code}": n for code, n in codes.items()},
        **{f"outcome {status}": n for status, n in counts.items()},
    )
    print(
        f"example {TOTALS['examples']}: {len(run.outcomes)} actions in {1 + len(rest)} steps, "
        f"{dict(counts)}, codes {dict(codes)}, {refusals} refused by mapping, {time.monotonic() - started:.1f}s"
    )


async def test_the_programs_reached_every_case() -> None:
    """What the random programs covered (a run that never hit a limit proved little)."""
    print(f"totals: {dict(sorted(TOTALS.items()))}")
    if not TOTALS["examples"]:
        pytest.skip("the invariant test did not run")
    for wanted in (
        "code QuotaExceeded.HaVipAssociation",
        "code QuotaExceeded.InstanceHaVip",
        "code QuotaExceeded.HaVipEip",
        "code QuotaExceeded.HaVip",
        "cross_tenant",
        "duplicates",
        "concurrent_steps",
        "mapping_refusals",
    ):
        assert TOTALS[wanted] > 0, f"no example covered {wanted}: {dict(TOTALS)}"


async def test_a_retried_request_answers_its_first_operation(platform: Platform) -> None:
    """Same Idempotency-Key, same request, after it succeeded: the first answer, not a 404.

    DESIGN.md: "the same key and body returns the first answer". Fails today: the gateway checks
    the HAVIP (and the EIP a release names implicitly) before it looks for the key.
    """
    side = SIDES[0]
    gateway = platform.gateway

    async def twice(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[httpx.Response, ...]:
        headers = {**auth(side), "Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
        first = await gateway.request(method, path, json=body, headers=headers)
        assert first.status_code == 202, first.text
        operation = await wait_operation(gateway, side, first.json()["operation"]["operation_id"])
        assert operation["status"] == "Succeeded", operation
        return first, await gateway.request(method, path, json=body, headers=headers)

    created, _ = await twice("POST", "/v1/havips", {"vswitch_id": side.vswitch_id})
    havip_id = created.json()["havip"]["havip_id"]
    eip_id = side.eips[0][0]
    await twice("PUT", f"/v1/havips/{havip_id}/eip", {"eip_id": eip_id})
    answers = {
        "release naming no EIP": await twice("DELETE", f"/v1/havips/{havip_id}/eip"),
        "delete": await twice("DELETE", f"/v1/havips/{havip_id}"),
    }
    wrong = {
        what: f"first {first.status_code}, retried {again.status_code} {again.text}"
        for what, (first, again) in answers.items()
        if again.status_code != 202
        or again.json()["operation"]["operation_id"] != first.json()["operation"]["operation_id"]
    }
    assert not wrong, wrong
