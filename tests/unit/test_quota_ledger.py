"""Quota's decisions and settlements, on the in-memory ledger store: every rule at memory speed.

What only PostgreSQL shows (row and advisory locks under real races) stays in
tests/integration/test_quota.py.
"""

from __future__ import annotations

from typing import Literal

import pytest

from schemas import topics
from schemas.errors import ErrorCode, InventoryMiss
from schemas.messages import (
    AssociateEip,
    AttachHaVip,
    AttachmentAccepted,
    CommandRejected,
    CommandSucceeded,
    CreateHaVip,
    DeleteHaVip,
    DetachHaVip,
    EipChanged,
    EniChanged,
    HaVipCreationAccepted,
    HaVipDeletionAccepted,
    InstanceStatus,
    UnassociateEip,
)
from services.quota.decisions import Command, Decision
from services.quota.handlers import Quota
from services.quota.ledger import QuotaLedger
from services.quota.rules import Limits
from tests.inventory_tools import TENANT, instance, vswitch
from tests.quota_fakes import MemoryLedgerStore


@pytest.fixture
def store() -> MemoryLedgerStore:
    store = MemoryLedgerStore()
    store.record_inventory(vswitch())
    store.record_inventory(vswitch("vsw-b", cidr="10.1.1.0/24"))
    for n in range(12):
        store.record_inventory(instance(n))
    store.record_inventory(
        EniChanged(
            eni_id="eni-1", instance_id="i-1", tenant_id=TENANT, vswitch_id="vsw-b", private_ip="10.1.1.9", revision=1
        )
    )
    for n, tenant in ((1, TENANT), (2, TENANT), (9, "tenant-other")):
        store.record_inventory(EipChanged(eip_id=f"eip-{n}", tenant_id=tenant, ip_address=f"203.0.113.{n}", revision=1))
    return store


@pytest.fixture
def ledger(store: MemoryLedgerStore) -> QuotaLedger:
    return QuotaLedger(store, Limits())


def code(decision: Decision) -> str:
    return decision.code if isinstance(decision, CommandRejected) else "accepted"


def create(
    n: int, *, command_id: str | None = None, vswitch_id: str = "vsw-a", ip_address: str | None = None
) -> CreateHaVip:
    return CreateHaVip(
        command_id=command_id or f"create-{n}",
        tenant_id=TENANT,
        havip_id=f"havip-{n}",
        vswitch_id=vswitch_id,
        ip_address=ip_address,
    )


def attach(n: int, target_id: str, *, command_id: str | None = None) -> AttachHaVip:
    return AttachHaVip(
        command_id=command_id or f"attach-{n}-{target_id}", tenant_id=TENANT, havip_id=f"havip-{n}", target_id=target_id
    )


def associate(n: int, eip: int, *, command_id: str | None = None) -> AssociateEip:
    return AssociateEip(
        command_id=command_id or f"eip-{n}-{eip}", tenant_id=TENANT, havip_id=f"havip-{n}", eip_id=f"eip-{eip}"
    )


def delete(n: int, *, command_id: str | None = None) -> DeleteHaVip:
    return DeleteHaVip(command_id=command_id or f"delete-{n}", tenant_id=TENANT, havip_id=f"havip-{n}")


async def decide_all(ledger: QuotaLedger, *commands: Command) -> list[str]:
    return [code(await ledger.decide(c)) for c in commands]


async def test_a_havip_gets_the_lowest_free_address_or_the_one_asked_for(ledger: QuotaLedger) -> None:
    first = await ledger.decide(create(0))
    assert isinstance(first, HaVipCreationAccepted)
    assert (first.vpc_id, first.ip_address) == ("vpc-t", "10.1.0.2")
    asked = await ledger.decide(create(1, ip_address="10.1.0.50"))
    assert isinstance(asked, HaVipCreationAccepted) and asked.ip_address == "10.1.0.50"
    assert await decide_all(
        ledger,
        create(2, ip_address="10.1.0.50"),  # another HAVIP's
        create(3, ip_address="10.1.0.100"),  # an instance's
        create(4, ip_address="10.1.0.255"),
        create(5, ip_address="10.1.2.5"),
        create(6, ip_address="2001:db8::1"),
    ) == [
        ErrorCode.IP_IN_USE,
        ErrorCode.IP_IN_USE,
        ErrorCode.IP_RESERVED,
        ErrorCode.IP_OUT_OF_RANGE,
        ErrorCode.IP_VERSION,
    ]


async def test_no_one_learns_of_another_tenants_vswitch_or_havip_id(store: MemoryLedgerStore) -> None:
    store.record_inventory(vswitch("vsw-x").model_copy(update={"tenant_id": "tenant-other"}))
    ledger = QuotaLedger(store, Limits())
    await ledger.decide(create(0))
    theirs = CreateHaVip(command_id="c-x", tenant_id="tenant-other", havip_id="havip-0", vswitch_id="vsw-x")
    assert await decide_all(ledger, create(1, vswitch_id="vsw-x"), theirs) == [
        ErrorCode.NOT_FOUND_VSWITCH,
        ErrorCode.INVALID_PARAMETER,
    ]
    detach_theirs = DetachHaVip(command_id="d-x", tenant_id="tenant-other", havip_id="havip-0", target_id="i-0")
    assert await decide_all(ledger, detach_theirs) == [ErrorCode.NOT_FOUND_HAVIP]


async def test_an_inventory_miss_waits_unless_the_inventory_is_settled(store: MemoryLedgerStore) -> None:
    ledger = QuotaLedger(store, Limits())
    await ledger.decide(create(0))
    with pytest.raises(InventoryMiss):
        await ledger.decide(attach(0, "i-50"), inventory_settled=False)
    store.record_inventory(instance(50))
    assert code(await ledger.decide(attach(0, "i-50"), inventory_settled=False)) == "accepted"
    with pytest.raises(InventoryMiss):
        await ledger.decide(create(1, vswitch_id="vsw-late"), inventory_settled=False)
    assert code(await ledger.decide(create(1, vswitch_id="vsw-late"))) == ErrorCode.NOT_FOUND_VSWITCH


async def test_a_redelivered_command_gets_the_same_decision_and_reserves_once(
    ledger: QuotaLedger, store: MemoryLedgerStore
) -> None:
    first, again = await ledger.decide(create(0)), await ledger.decide(create(0))
    assert first == again
    assert list(store.tables.havips) == ["havip-0"]
    refused = await ledger.decide(create(1, vswitch_id="vsw-nope"))
    assert await ledger.decide(create(1, vswitch_id="vsw-nope")) == refused


async def test_a_command_id_reused_by_another_command_is_refused_and_stored_nowhere(
    ledger: QuotaLedger, store: MemoryLedgerStore
) -> None:
    first = await ledger.decide(create(0))
    reuse = await ledger.decide(create(1, command_id="create-0"))
    assert code(reuse) == ErrorCode.IDEMPOTENT_MISMATCH
    assert isinstance(reuse, CommandRejected) and not reuse.settles_command
    assert await ledger.decide(create(0)) == first
    assert list(store.tables.havips) == ["havip-0"]


async def test_a_tenant_holds_no_more_havips_than_its_limit_until_a_delete_is_applied(
    store: MemoryLedgerStore,
) -> None:
    store.set_limits(TENANT, {"havips": 2})
    ledger = QuotaLedger(store, Limits())
    assert await decide_all(ledger, create(0), create(1), create(2)) == ["accepted", "accepted", ErrorCode.QUOTA_HAVIP]
    assert await decide_all(ledger, delete(0), create(3)) == ["accepted", ErrorCode.QUOTA_HAVIP]
    await ledger.settle("delete-0", applied=True)
    assert await decide_all(ledger, create(4)) == ["accepted"]


async def test_attachment_limits_per_havip_and_per_instance(ledger: QuotaLedger) -> None:
    for n in range(7):
        await ledger.decide(create(n))
    per_instance = await decide_all(ledger, *(attach(n, "i-0") for n in range(6)))
    assert per_instance == ["accepted"] * 5 + [ErrorCode.QUOTA_INSTANCE_HAVIP]
    per_havip = await decide_all(ledger, *(attach(6, f"i-{n}") for n in range(1, 12)))
    assert per_havip == ["accepted"] * 10 + [ErrorCode.QUOTA_HAVIP_ASSOCIATION]


async def test_an_attachment_needs_the_tenants_attachable_instance_in_the_havips_vswitch(
    store: MemoryLedgerStore,
) -> None:
    store.record_inventory(instance(20, status=InstanceStatus.STARTING))
    store.record_inventory(instance(21).model_copy(update={"tenant_id": "tenant-other"}))
    ledger = QuotaLedger(store, Limits())
    await ledger.decide(create(0))
    assert await decide_all(
        ledger,
        attach(0, "i-0"),
        attach(0, "i-0", command_id="again"),
        attach(0, "i-20"),
        attach(0, "i-21"),
        attach(0, "eni-1"),  # an ENI of i-1, in vsw-b
        attach(0, "i-nope"),
    ) == [
        "accepted",
        ErrorCode.ALREADY_ATTACHED,
        ErrorCode.INSTANCE_STATUS,
        ErrorCode.NOT_FOUND_INSTANCE,
        ErrorCode.VSWITCH_MISMATCH,
        ErrorCode.NOT_FOUND_INSTANCE,
    ]


async def test_an_eni_is_attached_as_its_instance(ledger: QuotaLedger) -> None:
    await ledger.decide(create(0, vswitch_id="vsw-b"))
    accepted = await ledger.decide(attach(0, "eni-1"))
    assert isinstance(accepted, AttachmentAccepted)
    assert (accepted.target_id, accepted.instance_id, accepted.eni_id) == ("eni-1", "i-1", "eni-1")


async def test_detaching_frees_the_slot_and_an_absent_attachment_is_not_found(ledger: QuotaLedger) -> None:
    for n in range(6):
        await ledger.decide(create(n))
    await decide_all(ledger, *(attach(n, "i-0") for n in range(5)))
    detach = DetachHaVip(command_id="d-1", tenant_id=TENANT, havip_id="havip-0", target_id="i-0")
    detach_again = DetachHaVip(command_id="d-2", tenant_id=TENANT, havip_id="havip-0", target_id="i-0")
    assert await decide_all(ledger, detach, detach_again, attach(5, "i-0")) == [
        "accepted",
        ErrorCode.NOT_FOUND_ATTACHMENT,
        "accepted",
    ]


async def test_eip_association_rules(ledger: QuotaLedger) -> None:
    await decide_all(ledger, create(0), create(1))
    unassociate = UnassociateEip(command_id="u-1", tenant_id=TENANT, havip_id="havip-0", eip_id="eip-1")
    assert await decide_all(
        ledger,
        associate(0, 1),
        associate(0, 2),  # one EIP per HAVIP by default
        associate(1, 1),  # held by havip-0
        associate(1, 9),  # another tenant's
        associate(1, 7),  # nobody's
        delete(0),
        unassociate,
        unassociate.model_copy(update={"command_id": "u-2"}),
        associate(1, 1, command_id="eip-1-1-again"),
    ) == [
        "accepted",
        ErrorCode.QUOTA_HAVIP_EIP,
        ErrorCode.EIP_IN_USE,
        ErrorCode.NOT_FOUND_EIP,
        ErrorCode.NOT_FOUND_EIP,
        ErrorCode.DEPENDENCY_HAVIP,
        "accepted",
        ErrorCode.NOT_FOUND_EIP,
        "accepted",
    ]


async def test_a_havip_being_deleted_takes_nothing_new(ledger: QuotaLedger) -> None:
    await ledger.decide(create(0))
    assert await decide_all(ledger, attach(0, "i-0"), delete(0), delete(0, command_id="d-2")) == [
        "accepted",
        ErrorCode.DEPENDENCY_HAVIP,
        ErrorCode.DEPENDENCY_HAVIP,
    ]
    await ledger.decide(DetachHaVip(command_id="d-0", tenant_id=TENANT, havip_id="havip-0", target_id="i-0"))
    assert await decide_all(ledger, delete(0, command_id="d-3"), attach(0, "i-1"), associate(0, 1)) == [
        "accepted",
        ErrorCode.HAVIP_STATUS,
        ErrorCode.HAVIP_STATUS,
    ]


async def test_what_the_mapping_service_refuses_is_freed_again(ledger: QuotaLedger, store: MemoryLedgerStore) -> None:
    await decide_all(ledger, create(0), attach(0, "i-0"), associate(0, 1))
    for command_id in ("attach-0-i-0", "eip-0-1"):
        await ledger.settle(command_id, applied=False)
    assert store.tables.attachments == {} and store.tables.havip_eips == {}
    assert await decide_all(ledger, delete(0)) == ["accepted"]
    await ledger.settle("delete-0", applied=False)  # refused: the HAVIP stays, usable again
    assert await decide_all(ledger, attach(0, "i-1")) == ["accepted"]
    await ledger.settle("create-0", applied=False)  # never created: nothing on it stays
    assert store.tables.havips == {} and store.tables.attachments == {}
    assert await decide_all(ledger, create(0, command_id="create-again")) == ["accepted"]
    await ledger.settle("create-0", applied=False)  # redelivered: the new HAVIP is not the refused one's
    assert list(store.tables.havips) == ["havip-0"]


async def test_an_applied_command_keeps_its_reservation(ledger: QuotaLedger, store: MemoryLedgerStore) -> None:
    await decide_all(ledger, create(0), attach(0, "i-0"))
    for command_id in ("create-0", "attach-0-i-0", "unknown"):
        await ledger.settle(command_id, applied=True)
    assert list(store.tables.havips) == ["havip-0"] and len(store.tables.attachments) == 1


class Published:
    def __init__(self) -> None:
        self.records: list[tuple[topics.Topic, str, bytes]] = []

    async def __call__(self, topic: topics.Topic, key: str, value: bytes) -> None:
        self.records.append((topic, key, value))


def result(
    command_id: str, *, stage: Literal["quota", "mapping"] = "mapping", code: str | None = None
) -> CommandSucceeded | CommandRejected:
    if code is None:
        return CommandSucceeded(
            command_id=command_id, tenant_id=TENANT, havip_id="havip-0", command_type="AttachHaVip", stage=stage
        )
    return CommandRejected(
        command_id=command_id,
        tenant_id=TENANT,
        havip_id="havip-0",
        command_type="AttachHaVip",
        stage=stage,
        code=code,
        reason="no",
    )


async def test_a_decision_is_published_where_its_reader_waits(store: MemoryLedgerStore) -> None:
    published = Published()
    caught_up: list[str] = []

    async def inventory_caught_up() -> None:
        caught_up.append("waited")
        store.record_inventory(instance(40))

    quota = Quota(QuotaLedger(store, Limits()), published, inventory_caught_up)
    await quota.on_command(create(0))
    await quota.on_command(attach(0, "i-40"))  # the instance is still on its way
    await quota.on_command(attach(0, "i-nope"))
    assert caught_up == ["waited", "waited"]
    assert [(topic, key) for topic, key, _ in published.records] == [
        (topics.ACCEPTED, "havip-0"),
        (topics.ACCEPTED, "havip-0"),
        (topics.RESULTS, "attach-0-i-nope"),
    ]
    rejected = topics.RESULTS.parse(published.records[2][2])
    assert isinstance(rejected, CommandRejected) and rejected.code == ErrorCode.NOT_FOUND_INSTANCE


async def test_only_the_mapping_services_outcomes_settle(store: MemoryLedgerStore) -> None:
    async def no_inventory_miss_here() -> None:
        pytest.fail("waited for the inventory")

    quota = Quota(QuotaLedger(store, Limits()), Published(), no_inventory_miss_here)
    await quota.on_command(create(0))
    await quota.on_command(attach(0, "i-0"))
    await quota.on_result(result("attach-0-i-0", stage="quota", code=ErrorCode.APPLY_FAILED))
    await quota.on_result(result("attach-0-i-0", code=ErrorCode.IDEMPOTENT_MISMATCH))
    await quota.on_result(result("attach-0-i-0"))
    assert len(store.tables.attachments) == 1
    await quota.on_result(result("attach-0-i-0", code=ErrorCode.APPLY_FAILED))
    assert store.tables.attachments == {}
    await quota.on_command(delete(0))
    await quota.on_result(result("delete-0"))
    assert store.tables.havips == {}
    # Redelivered after the HAVIP is gone, the delete still gets its first answer.
    assert isinstance(await QuotaLedger(store, Limits()).decide(delete(0)), HaVipDeletionAccepted)
