"""What every quota ledger store does, whatever keeps it: one suite, run against each.

tests/unit/test_quota_store.py runs it on the in-memory store, tests/integration/test_quota_store.py
on PostgreSQL. A subclass gives the `backend` fixture; the tests here only use the LedgerStore
protocol, plus seeding the inventory and the tenant's limits as the quota worker and `havip admin`
would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

import pytest

from schemas.messages import (
    AttachmentAccepted,
    CommandRejected,
    EipAssociationAccepted,
    EipChanged,
    EniChanged,
    HaVipCreationAccepted,
    HaVipDeletionAccepted,
)
from services.quota import rules
from services.quota.releases import (
    FreeAttachment,
    FreeCreatedHaVip,
    FreeDeletedHaVip,
    FreeEipAssociation,
    KeepHaVip,
)
from services.quota.store import AttachmentCounts, Dependents, LedgerStore
from services.runtime.inventory import InventoryChange
from tests.inventory_tools import TENANT, instance, vswitch


class StoreBackend(Protocol):
    store: LedgerStore

    async def record_inventory(self, changes: Sequence[InventoryChange]) -> None: ...
    async def set_limits(self, tenant_id: str, overrides: Mapping[str, int | None]) -> None: ...


def eni(n: int, instance_n: int, *, vswitch_id: str = "vsw-a") -> EniChanged:
    return EniChanged(
        eni_id=f"eni-{n}",
        instance_id=f"i-{instance_n}",
        tenant_id=TENANT,
        vswitch_id=vswitch_id,
        private_ip=f"10.1.0.{200 + n}",
        revision=1,
    )


def eip(n: int, *, tenant_id: str = TENANT) -> EipChanged:
    return EipChanged(eip_id=f"eip-{n}", tenant_id=tenant_id, ip_address=f"203.0.113.{n}", revision=1)


def created(n: int, *, address: str | None = None, command_id: str | None = None) -> HaVipCreationAccepted:
    return HaVipCreationAccepted(
        command_id=command_id or f"create-{n}",
        tenant_id=TENANT,
        havip_id=f"havip-{n}",
        vpc_id="vpc-t",
        vswitch_id="vsw-a",
        ip_address=address or f"10.1.0.{10 + n}",
    )


def attached(havip_n: int, target_id: str, instance_id: str, *, command_id: str) -> AttachmentAccepted:
    return AttachmentAccepted(
        command_id=command_id,
        tenant_id=TENANT,
        havip_id=f"havip-{havip_n}",
        target_id=target_id,
        instance_id=instance_id,
    )


def associated(havip_n: int, eip_n: int, *, command_id: str) -> EipAssociationAccepted:
    return EipAssociationAccepted(
        command_id=command_id,
        tenant_id=TENANT,
        havip_id=f"havip-{havip_n}",
        eip_id=f"eip-{eip_n}",
        eip_address=f"203.0.113.{eip_n}",
    )


def refused(command_id: str) -> CommandRejected:
    return CommandRejected(
        command_id=command_id,
        tenant_id=TENANT,
        havip_id="havip-0",
        command_type="CreateHaVip",
        stage="quota",
        code="QuotaExceeded.HaVip",
        reason="tenant holds too many",
    )


class LedgerStoreContract:
    @pytest.fixture
    async def backend(self) -> StoreBackend:
        raise NotImplementedError("a subclass gives the store under test")

    async def test_a_decision_is_kept_with_its_digest(self, backend: StoreBackend) -> None:
        decision = refused("c-1")
        async with backend.store.transaction() as book:
            assert await book.decision("c-1") is None
            await book.record_decision("c-1", "havip-0", decision, "abc")
        async with backend.store.transaction() as book:
            stored = await book.decision("c-1")
        assert stored is not None
        assert (stored.decision, stored.digest) == (decision, "abc")

    async def test_a_transaction_that_raises_keeps_nothing(self, backend: StoreBackend) -> None:
        await backend.record_inventory([vswitch()])
        with pytest.raises(RuntimeError):
            async with backend.store.transaction() as book:
                await book.reserve_havip(created(0))
                await book.record_decision("c-1", "havip-0", refused("c-1"), "abc")
                raise RuntimeError("the worker died here")
        async with backend.store.transaction() as book:
            assert await book.decision("c-1") is None
            assert not await book.havip_taken("havip-0")

    async def test_the_inventory_copy_as_the_ledger_reads_it(self, backend: StoreBackend) -> None:
        await backend.record_inventory([vswitch(), instance(0), eni(1, 0, vswitch_id="vsw-b"), eip(7)])
        async with backend.store.transaction() as book:
            assert await book.vswitch("vsw-a") == rules.InventoryVSwitch(
                "vsw-a", TENANT, "vpc-t", IPv4Network("10.1.0.0/24")
            )
            assert await book.vswitch("vsw-nope") is None
            assert await book.lock_instance("i-0") == rules.InventoryInstance("i-0", TENANT, "vsw-a", "Running")
            assert await book.lock_instance("i-nope") is None
            assert await book.eni("eni-1") == rules.InventoryEni("eni-1", "i-0", "vsw-b")
            assert await book.eni("i-0") is None
            assert await book.lock_eip("eip-7") == rules.Eip("eip-7", TENANT, "203.0.113.7", None)
            assert await book.lock_eip("eip-8") is None

    async def test_addresses_in_use_are_the_vpcs_havips_instances_and_enis(self, backend: StoreBackend) -> None:
        other_vpc = vswitch("vsw-x", cidr="10.9.0.0/24").model_copy(update={"vpc_id": "vpc-x"})
        await backend.record_inventory([vswitch(), other_vpc, instance(0), eni(1, 0)])
        async with backend.store.transaction() as book:
            await book.reserve_havip(created(0, address="10.1.0.50"))
            used = await book.addresses_in_use("vpc-t")
            assert await book.addresses_in_use("vpc-x") == set()
        assert used == {IPv4Address("10.1.0.50"), IPv4Address("10.1.0.100"), IPv4Address("10.1.0.201")}

    async def test_a_havip_reserved_counts_until_its_delete_is_applied(self, backend: StoreBackend) -> None:
        await backend.record_inventory([vswitch()])
        async with backend.store.transaction() as book:
            await book.reserve_havip(created(0))
            await book.reserve_havip(created(1))
        async with backend.store.transaction() as book:
            assert await book.havip_taken("havip-0")
            assert not await book.havip_taken("havip-9")
            assert await book.havips_held(TENANT) == 2
            assert await book.havips_held("tenant-other") == 0
            assert await book.lock_havip("havip-0") == rules.ReservedHaVip("havip-0", TENANT, "vsw-a")
            assert await book.lock_havip("havip-9") is None
            await book.mark_deleting(HaVipDeletionAccepted(command_id="del-0", tenant_id=TENANT, havip_id="havip-0"))
        async with backend.store.transaction() as book:
            assert await book.lock_havip("havip-0") == rules.ReservedHaVip("havip-0", TENANT, "vsw-a", deleting=True)
            assert await book.havips_held(TENANT) == 2
            assert IPv4Address("10.1.0.10") in await book.addresses_in_use("vpc-t")
            await book.release(FreeDeletedHaVip("havip-0", "del-0"))
        async with backend.store.transaction() as book:
            assert await book.havips_held(TENANT) == 1
            assert IPv4Address("10.1.0.10") not in await book.addresses_in_use("vpc-t")

    async def test_an_instance_counts_each_havip_once_whichever_of_its_targets(self, backend: StoreBackend) -> None:
        await backend.record_inventory([vswitch(), instance(0), instance(1), eni(1, 0)])
        async with backend.store.transaction() as book:
            for n in range(2):
                await book.reserve_havip(created(n))
            await book.reserve_attachment(attached(0, "i-0", "i-0", command_id="a-1"))
            await book.reserve_attachment(attached(0, "eni-1", "i-0", command_id="a-2"))
            await book.reserve_attachment(attached(1, "i-1", "i-1", command_id="a-3"))
        async with backend.store.transaction() as book:
            assert await book.attachment_counts("havip-0", "i-0") == AttachmentCounts(2, 1, True)
            assert await book.attachment_counts("havip-1", "i-0") == AttachmentCounts(1, 1, False)
            assert await book.attachment_counts("havip-1", "i-9") == AttachmentCounts(1, 0, False)
            assert await book.dependents("havip-0") == Dependents(attachments=2, eips=0)

    async def test_detaching_and_releasing_an_eip_say_whether_there_was_one(self, backend: StoreBackend) -> None:
        await backend.record_inventory([vswitch(), instance(0), eip(1)])
        async with backend.store.transaction() as book:
            await book.reserve_havip(created(0))
            await book.reserve_havip(created(1))
            await book.reserve_attachment(attached(0, "i-0", "i-0", command_id="a-1"))
            await book.reserve_eip(associated(0, 1, command_id="e-1"))
        async with backend.store.transaction() as book:
            assert await book.lock_eip("eip-1") == rules.Eip("eip-1", TENANT, "203.0.113.1", "havip-0")
            assert await book.eips_held("havip-0") == 1
            assert await book.dependents("havip-0") == Dependents(attachments=1, eips=1)
            assert not await book.free_eip("havip-1", "eip-1")
            assert await book.free_eip("havip-0", "eip-1")
            assert not await book.free_eip("havip-0", "eip-1")
            assert not await book.free_attachment("havip-1", "i-0")
            assert await book.free_attachment("havip-0", "i-0")
            assert not await book.free_attachment("havip-0", "i-0")
            assert await book.dependents("havip-0") == Dependents(attachments=0, eips=0)

    async def test_a_refused_attachment_or_association_frees_only_its_own(self, backend: StoreBackend) -> None:
        await backend.record_inventory([vswitch(), instance(0), instance(1), eip(1), eip(2)])
        async with backend.store.transaction() as book:
            await book.reserve_havip(created(0))
            await book.reserve_havip(created(1))
            await book.reserve_attachment(attached(0, "i-0", "i-0", command_id="a-1"))
            await book.reserve_attachment(attached(0, "i-1", "i-1", command_id="a-2"))
            await book.reserve_eip(associated(0, 1, command_id="e-1"))
            await book.reserve_eip(associated(1, 2, command_id="e-2"))
        for _ in range(2):  # a redelivered answer frees nothing more
            async with backend.store.transaction() as book:
                await book.release(FreeAttachment("a-1"))
                await book.release(FreeEipAssociation("e-1"))
        async with backend.store.transaction() as book:
            assert await book.attachment_counts("havip-0", "i-1") == AttachmentCounts(1, 1, True)
            assert await book.attachment_counts("havip-0", "i-0") == AttachmentCounts(1, 0, False)
            assert (await book.eips_held("havip-0"), await book.eips_held("havip-1")) == (0, 1)

    async def test_a_refused_delete_keeps_the_havip(self, backend: StoreBackend) -> None:
        await backend.record_inventory([vswitch()])
        async with backend.store.transaction() as book:
            await book.reserve_havip(created(0))
            await book.mark_deleting(HaVipDeletionAccepted(command_id="del-0", tenant_id=TENANT, havip_id="havip-0"))
        async with backend.store.transaction() as book:
            await book.release(FreeDeletedHaVip("havip-0", "del-other"))
            await book.release(KeepHaVip("del-0"))
        async with backend.store.transaction() as book:
            assert await book.lock_havip("havip-0") == rules.ReservedHaVip("havip-0", TENANT, "vsw-a")
            await book.release(FreeDeletedHaVip("havip-0", "del-0"))  # no longer being deleted
            assert await book.havip_taken("havip-0")

    async def test_a_refused_create_frees_the_havip_and_all_on_it(self, backend: StoreBackend) -> None:
        await backend.record_inventory([vswitch(), instance(0), eip(1)])
        async with backend.store.transaction() as book:
            await book.reserve_havip(created(0))
            await book.reserve_attachment(attached(0, "i-0", "i-0", command_id="a-1"))
            await book.reserve_eip(associated(0, 1, command_id="e-1"))
            await book.release(FreeCreatedHaVip("havip-0", "create-other"))
            assert await book.dependents("havip-0") == Dependents(attachments=1, eips=1)
            await book.release(FreeCreatedHaVip("havip-0", "create-0"))
        async with backend.store.transaction() as book:
            assert not await book.havip_taken("havip-0")
            assert await book.attachment_counts("havip-0", "i-0") == AttachmentCounts(0, 0, False)
            assert await book.lock_eip("eip-1") == rules.Eip("eip-1", TENANT, "203.0.113.1", None)
            # The id taken again by another create: the first create's refusal, redelivered, frees nothing.
            await book.reserve_havip(created(0, command_id="create-again"))
            await book.release(FreeCreatedHaVip("havip-0", "create-0"))
            assert await book.havip_taken("havip-0")

    async def test_a_tenants_limits_are_its_overrides_else_the_defaults(self, backend: StoreBackend) -> None:
        defaults = rules.Limits()
        await backend.set_limits(TENANT, {"havips": 3, "eips_per_havip": 2})
        await backend.set_limits(TENANT, {"eips_per_havip": None})
        async with backend.store.transaction() as book:
            assert await book.limits(TENANT, defaults) == rules.Limits(havips=3)
            assert await book.limits("tenant-other", defaults) is defaults
