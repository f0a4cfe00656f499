"""One contract for the mapping tables, run against memory and against PostgreSQL.

`services.mapping.postgres_store.PostgresMappingStore` and `tests.mapping_fakes.MemoryMappingStore`
must answer alike: the handlers' unit tests run on the second because it behaves as
the first. Each test takes `tables`; tests/unit/test_mapping_store.py runs them on
memory, tests/integration/test_mapping_store.py on a fresh, migrated database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

import pytest

from schemas.errors import ErrorCode
from schemas.messages import (
    AttachmentAccepted,
    EipAssociationAccepted,
    EniChanged,
    HaVipCreationAccepted,
    HaVipStatus,
    InstanceChanged,
    InstanceStatus,
    MappedAttachment,
    MappedEip,
    ReportSource,
    Route,
    VrrpReported,
    VrrpState,
)
from services.mapping.election import Candidate, OwnerCause, OwnerChange, Trigger, TriggerKind, VrrpReport
from services.mapping.report_batch import HavipAfter, IncomingReport, OwnerOutcome
from services.mapping.store import CannotHold, CommandAnswer, MappingStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Tables:
    """A store under contract, and how a gateway leaves renewals in it (not the store's job)."""

    store: MappingStore
    leave_renewal: Callable[[VrrpReported], Awaitable[None]]


def created(havip_id: str = "havip-1", tenant_id: str = "tenant-a", **fields: str) -> HaVipCreationAccepted:
    values = {"vpc_id": "vpc-1", "vswitch_id": "vsw-1", "ip_address": "192.168.1.100", **fields}
    return HaVipCreationAccepted(command_id=f"c-{havip_id}", tenant_id=tenant_id, havip_id=havip_id, **values)


def attached(instance_id: str, havip_id: str = "havip-1", eni_id: str | None = None) -> AttachmentAccepted:
    return AttachmentAccepted(
        command_id=f"a-{havip_id}-{eni_id or instance_id}",
        tenant_id="tenant-a",
        havip_id=havip_id,
        target_id=eni_id or instance_id,
        instance_id=instance_id,
        eni_id=eni_id,
    )


def instance(
    instance_id: str, ip: str, status: InstanceStatus = InstanceStatus.RUNNING, revision: int = 1
) -> InstanceChanged:
    return InstanceChanged(
        instance_id=instance_id,
        tenant_id="tenant-a",
        vpc_id="vpc-1",
        vswitch_id="vsw-1",
        private_ip=ip,
        status=status,
        host_id=f"host-{instance_id}",
        revision=revision,
    )


def master(instance_id: str, seq: int, at: float, lease: float | None = 2.5, priority: int = 100) -> VrrpReport:
    return VrrpReport(
        instance_id,
        VrrpState.MASTER,
        priority,
        seq,
        reported_at=t(at),
        received_at=t(at),
        expires_at=None if lease is None else t(at + lease),
    )


async def two_attached(store: MappingStore) -> None:
    """havip-1 with i-a and i-b attached and running."""
    async with store.transaction() as tx:
        await tx.create_havip(created())
        for change in (instance("i-a", "10.0.0.11"), instance("i-b", "10.0.0.12")):
            assert await tx.record_inventory(change)
        await tx.add_attachment(attached("i-a"))
        await tx.add_attachment(attached("i-b"))


def renewal(seq: int, at: float, instance_id: str = "i-a", havip_id: str = "havip-1") -> VrrpReported:
    return VrrpReported(
        message_id=f"r-{instance_id}-{seq}",
        havip_id=havip_id,
        tenant_id="tenant-a",
        instance_id=instance_id,
        state=VrrpState.MASTER,
        priority=100,
        seq=seq,
        reported_at=t(at),
        received_at=t(at),
        lease_seconds=2.5,
    )


class MappingStoreContract:
    """Every test of the contract; a subclass gives the fixture `tables`."""

    async def test_a_created_havip_is_available_at_version_one_and_a_redelivery_changes_nothing(
        self, tables: Tables
    ) -> None:
        store = tables.store
        for name in ("first", "redelivered"):
            async with store.transaction() as tx:
                await tx.create_havip(created(name=name))
        async with store.transaction() as tx:
            row = await tx.lock_havip("havip-1")
            assert await tx.lock_havip("havip-9") is None
        assert row is not None
        assert (row.tenant_id, row.status, row.owner_target_id, row.version, row.published_version) == (
            "tenant-a",
            HaVipStatus.AVAILABLE,
            None,
            1,
            0,
        )
        [state] = await store.states(["havip-1", "havip-9"])
        assert (state.ip_address, state.status, state.owner, state.eips, state.attachments, state.version) == (
            "192.168.1.100",
            HaVipStatus.AVAILABLE,
            None,
            [],
            [],
            1,
        )

    async def test_a_contest_holds_every_attachment_with_its_address_and_status(self, tables: Tables) -> None:
        store = tables.store
        async with store.transaction() as tx:
            await tx.create_havip(created())
            await tx.record_inventory(instance("i-a", "10.0.0.11"))
            await tx.record_inventory(instance("i-b", "10.0.0.12", InstanceStatus.STOPPED))
            await tx.record_inventory(
                EniChanged(
                    eni_id="eni-1",
                    instance_id="i-b",
                    tenant_id="tenant-a",
                    vswitch_id="vsw-1",
                    private_ip="10.0.1.5",
                    revision=1,
                )
            )
            await tx.add_attachment(attached("i-a"))
            await tx.add_attachment(attached("i-a"))  # redelivered: still one
            await tx.add_attachment(attached("i-b", eni_id="eni-1"))
            await tx.add_attachment(attached("i-unknown"))
            contest = await tx.load_contest("havip-1", "i-a")
            assert await tx.instance_status("i-b") is InstanceStatus.STOPPED
            assert await tx.instance_status("i-unknown") is None
            assert [h.havip_id for h in await tx.lock_havips_of_instance("i-a")] == ["havip-1"]
            assert await tx.lock_havips_of_instance("i-none") == []
        assert contest.owner_target_id == "i-a" and contest.reports == {}
        assert contest.candidates == (
            Candidate("eni-1", "i-b", IPv4Address("10.0.1.5"), InstanceStatus.STOPPED),
            Candidate("i-a", "i-a", IPv4Address("10.0.0.11"), InstanceStatus.RUNNING),
            # Not in the inventory copy yet: it cannot own until it is.
            Candidate("i-unknown", "i-unknown", IPv4Address(0), InstanceStatus.DELETED),
        )
        async with store.transaction() as tx:
            await tx.remove_attachment("havip-1", "i-unknown")
            await tx.remove_attachment("havip-1", "i-unknown")  # redelivered
            assert await tx.dependants("havip-1") == (2, 0)

    async def test_inventory_keeps_only_newer_revisions(self, tables: Tables) -> None:
        async with tables.store.transaction() as tx:
            assert await tx.record_inventory(instance("i-a", "10.0.0.11", revision=5))
            assert not await tx.record_inventory(instance("i-a", "10.0.0.99", InstanceStatus.STOPPED, revision=5))
            assert not await tx.record_inventory(instance("i-a", "10.0.0.99", InstanceStatus.STOPPED, revision=4))
            assert await tx.instance_status("i-a") is InstanceStatus.RUNNING
            assert await tx.record_inventory(instance("i-a", "10.0.0.11", InstanceStatus.STOPPED, revision=6))
            assert await tx.instance_status("i-a") is InstanceStatus.STOPPED

    async def test_a_batch_stores_reports_owners_at_their_versions_and_why(self, tables: Tables) -> None:
        store = tables.store
        await two_attached(store)
        a = Candidate("i-a", "i-a", IPv4Address("10.0.0.11"), InstanceStatus.RUNNING)
        change = OwnerChange(None, a, OwnerCause.MASTER_REPORTED, "i-a claims MASTER")
        trigger = Trigger(TriggerKind.VRRP_REPORT, message_id="m-1", instance_id="i-a", seq=1)
        async with store.transaction() as tx:
            await tx.save_batch(
                {("havip-1", "i-a"): master("i-a", 1, 0.0)},
                {"havip-1": HavipAfter("i-a", HaVipStatus.IN_USE, 4)},
                [OwnerOutcome("havip-1", 4, a, change, trigger)],
            )
            await tx.save_batch({}, {}, [])  # nothing decided: nothing stored
        async with store.transaction() as tx:
            [locked] = await tx.lock_havips(["havip-1", "havip-9"])
            assert await tx.load_reports([("havip-1", "i-a"), ("havip-1", "i-b")]) == {
                ("havip-1", "i-a"): master("i-a", 1, 0.0)
            }
        assert (locked.version, locked.contest.owner_target_id) == (4, "i-a")
        assert locked.contest.reports == {"i-a": master("i-a", 1, 0.0)}
        [state] = await store.states(["havip-1"])
        assert state.owner == Route(instance_id="i-a", private_ip="10.0.0.11", host_id="host-i-a")
        assert state.status is HaVipStatus.IN_USE and state.version == 4
        assert state.attachments == [
            MappedAttachment(target_id="i-a", instance_id="i-a"),
            MappedAttachment(target_id="i-b", instance_id="i-b"),
        ]

    async def test_a_reelection_bumps_the_version_and_deleting_leaves_the_row(self, tables: Tables) -> None:
        store = tables.store
        await two_attached(store)
        async with store.transaction() as tx:
            assert await tx.save_owner("havip-1", "i-b", HaVipStatus.IN_USE) == 2
            assert await tx.save_owner("havip-1", None, HaVipStatus.IN_USE) == 3
            await tx.mark_deleted("havip-1")
            row = await tx.lock_havip("havip-1")
        assert row is not None and (row.status, row.owner_target_id, row.version) == (HaVipStatus.DELETED, None, 4)

    async def test_an_eip_is_held_by_one_havip(self, tables: Tables) -> None:
        store = tables.store
        async with store.transaction() as tx:
            await tx.create_havip(created("havip-1"))
            await tx.create_havip(created("havip-2"))
            association = EipAssociationAccepted(
                command_id="e-1", tenant_id="tenant-a", havip_id="havip-1", eip_id="eip-1", eip_address="203.0.113.7"
            )
            await tx.associate_eip(association)
            await tx.associate_eip(association)  # redelivered
            assert await tx.eip_holder("eip-1") == "havip-1"
            assert await tx.eip_holder("eip-2") is None
            assert await tx.dependants("havip-1") == (0, 1)
            await tx.unassociate_eip("havip-2", "eip-1")  # not its EIP: nothing happens
            assert await tx.eip_holder("eip-1") == "havip-1"
        [state] = await store.states(["havip-1"])
        assert state.eips == [MappedEip(eip_id="eip-1", ip_address="203.0.113.7")]
        async with store.transaction() as tx:
            await tx.unassociate_eip("havip-1", "eip-1")
            assert await tx.eip_holder("eip-1") is None

    async def test_a_command_is_answered_once_and_remembered(self, tables: Tables) -> None:
        async with tables.store.transaction() as tx:
            assert await tx.command_answer("c-1") is None
            await tx.record_command("c-1", "havip-1", CommandAnswer())
            await tx.record_command("c-2", "havip-1", CommandAnswer(ErrorCode.DEPENDENCY_HAVIP, "still attached"))
        async with tables.store.transaction() as tx:
            assert await tx.command_answer("c-1") == CommandAnswer()
            assert await tx.command_answer("c-2") == CommandAnswer(ErrorCode.DEPENDENCY_HAVIP, "still attached")

    async def test_a_savepoint_undoes_only_its_own_changes_and_a_failed_transaction_all(self, tables: Tables) -> None:
        store = tables.store
        async with store.transaction() as tx:
            await tx.create_havip(created("havip-1"))
            with pytest.raises(CannotHold):
                async with tx.savepoint():
                    await tx.create_havip(created("havip-2"))
                    await tx.create_havip(created("havip-3", ip_address="not-an-address"))
        assert [s.havip_id for s in await store.states(["havip-1", "havip-2", "havip-3"])] == ["havip-1"]
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.create_havip(created("havip-5"))
                raise RuntimeError("the worker fails before its commit")
        assert await store.states(["havip-5"]) == []

    async def test_renewals_are_taken_once_the_newest_of_each_claim(self, tables: Tables) -> None:
        store = tables.store
        await two_attached(store)
        for item in (renewal(2, 1.0), renewal(3, 2.0), renewal(1, 0.5, "i-b")):
            await tables.leave_renewal(item)
        await tables.leave_renewal(renewal(2, 1.0))  # older than what waits: kept out
        async with store.transaction() as tx:
            assert await tx.take_renewals(10, {"havip-9"}) == []
            taken = await tx.take_renewals(10, {"havip-1"})
        assert sorted((i.report.instance_id, i.report.seq, i.renewal) for i in taken) == [
            ("i-a", 3, True),
            ("i-b", 1, True),
        ]
        mine = next(i for i in taken if i.report.instance_id == "i-a")
        assert mine == IncomingReport("havip-1", "tenant-a", "r-i-a-3", master("i-a", 3, 2.0), renewal=True)
        async with store.transaction() as tx:
            assert await tx.take_renewals(10) == []  # taken already
        await tables.leave_renewal(renewal(4, 3.0))
        async with store.transaction() as tx:
            assert [i.report.seq for i in await tx.take_renewals(1)] == [4]
        assert await store.forget_renewals(timedelta(0)) == 2  # taken, and received long ago (T0)
        assert await store.forget_renewals(timedelta(0)) == 0

    async def test_a_renewal_extends_only_the_report_it_was_judged_against(self, tables: Tables) -> None:
        store = tables.store
        await two_attached(store)
        judged = {("havip-1", "i-a"): master("i-a", 1, 0.0), ("havip-1", "i-b"): master("i-b", 1, 0.0)}
        async with store.transaction() as tx:
            await tx.save_reports(judged)
            # i-b's report changed after the renewal was judged: that renewal must take the long way.
            await tx.save_reports({("havip-1", "i-b"): master("i-b", 2, 0.5)})
            renewed = {("havip-1", "i-a"): master("i-a", 2, 1.0, lease=15.0), ("havip-1", "i-b"): master("i-b", 3, 1.0)}
            assert await tx.extend_claims(renewed, judged) == {("havip-1", "i-a")}
            assert await tx.extend_claims({}, judged) == set()
            stored = await tx.load_reports(list(judged))
        assert stored[("havip-1", "i-a")] == master("i-a", 2, 1.0, lease=15.0)
        assert stored[("havip-1", "i-b")] == master("i-b", 2, 0.5)

    async def test_published_versions_only_grow_and_can_be_forgotten(self, tables: Tables) -> None:
        store = tables.store
        await two_attached(store)
        async with store.transaction() as tx:
            await tx.create_havip(created("havip-2"))
            await tx.save_owner("havip-1", "i-a", HaVipStatus.IN_USE)
        await asyncio.sleep(0.01)
        assert await store.unpublished_havips(timedelta(hours=1), 10) == []  # too recent to be a lost publish
        assert await store.unpublished_havips(timedelta(0), 10) == ["havip-1", "havip-2"]
        assert await store.unpublished_havips(timedelta(0), 1) == ["havip-1"]
        await store.mark_published({"havip-1": 2, "havip-2": 1})
        await store.mark_published({"havip-1": 1})  # a late, older publish: no step back
        await store.mark_published({})
        assert await store.unpublished_havips(timedelta(0), 10) == []
        assert await store.forget_published() == 2
        assert await store.unpublished_havips(timedelta(0), 10) == ["havip-1", "havip-2"]

    async def test_lapse_candidates_are_owners_whose_lease_ended_while_another_claim_runs(self, tables: Tables) -> None:
        store = tables.store
        for havip_id in ("havip-1", "havip-2", "havip-3", "havip-4"):
            async with store.transaction() as tx:
                await tx.create_havip(created(havip_id))
                for change in (instance("i-a", "10.0.0.11"), instance("i-b", "10.0.0.12")):
                    await tx.record_inventory(change)
                await tx.add_attachment(attached("i-a", havip_id))
                await tx.add_attachment(attached("i-b", havip_id))
                await tx.save_owner(havip_id, "i-a", HaVipStatus.IN_USE)
        async with store.transaction() as tx:
            await tx.save_reports(
                {
                    # havip-1: the owner's lease ran out at 2.5 s; i-b claims until 12.5 s.
                    ("havip-1", "i-a"): master("i-a", 1, 0.0),
                    ("havip-1", "i-b"): master("i-b", 1, 10.0),
                    # havip-2: the owner's lease still runs.
                    ("havip-2", "i-a"): master("i-a", 1, 9.0),
                    ("havip-2", "i-b"): master("i-b", 1, 10.0),
                    # havip-3: the owner's lease ran out and nobody else claims.
                    ("havip-3", "i-a"): master("i-a", 1, 0.0),
                    # havip-4: the owner's lease ran out; i-b claims without a lease.
                    ("havip-4", "i-a"): master("i-a", 1, 0.0),
                    ("havip-4", "i-b"): master("i-b", 1, 0.0, lease=None),
                }
            )
        assert await store.lapse_candidates(t(11.0), "", 10) == ["havip-1", "havip-4"]
        assert await store.lapse_candidates(t(11.0), "", 1) == ["havip-1"]
        assert await store.lapse_candidates(t(11.0), "havip-1", 10) == ["havip-4"]
        assert await store.lapse_candidates(t(1.0), "", 10) == []  # at 1 s every owner's lease ran

    async def test_states_route_to_the_owners_eni_on_its_instances_host(self, tables: Tables) -> None:
        store = tables.store
        async with store.transaction() as tx:
            await tx.create_havip(created())
            await tx.record_inventory(instance("i-a", "10.0.0.11"))
            await tx.record_inventory(
                EniChanged(
                    eni_id="eni-1",
                    instance_id="i-a",
                    tenant_id="tenant-a",
                    vswitch_id="vsw-1",
                    private_ip="10.0.1.5",
                    revision=1,
                )
            )
            await tx.add_attachment(attached("i-a", eni_id="eni-1"))
            await tx.save_owner("havip-1", "eni-1", HaVipStatus.IN_USE)
            [inside] = await tx.states(["havip-1"])  # what this transaction is about to commit
        assert inside.owner == Route(instance_id="i-a", eni_id="eni-1", private_ip="10.0.1.5", host_id="host-i-a")
        [committed] = await store.states(["havip-1"])
        envelope = {"message_id", "occurred_at"}
        assert committed.model_dump(exclude=envelope) == inside.model_dump(exclude=envelope)
        assert await store.states([]) == []

    async def test_reports_keep_their_source(self, tables: Tables) -> None:
        store = tables.store
        await two_attached(store)
        seen = VrrpReport(
            "i-a", VrrpState.STOP, 0, 7, reported_at=t(1.0), received_at=t(1.0), source=ReportSource.OBSERVER
        )
        async with store.transaction() as tx:
            await tx.save_reports({("havip-1", "i-a"): seen})
            assert await tx.load_reports([("havip-1", "i-a")]) == {("havip-1", "i-a"): seen}
