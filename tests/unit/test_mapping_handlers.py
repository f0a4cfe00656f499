"""The mapping service's handlers on its tables in memory: each message, parse → decide → persist → publish.

What only PostgreSQL shows (row locks between workers, SKIP LOCKED, migrations) is the
integration tier's; the tables in memory answer as PostgreSQL does (the contract suite).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from schemas import topics
from schemas.errors import ErrorCode
from schemas.messages import (
    Accepted,
    AttachmentAccepted,
    CommandRejected,
    CommandSucceeded,
    DetachmentAccepted,
    HaVipDeletionAccepted,
    HaVipMappingChanged,
    HaVipStatus,
    InstanceStatus,
    ObservedClaimsRenewed,
    RenewedClaim,
    ReportSource,
    VrrpReported,
    VrrpState,
    utcnow,
)
from services.mapping import handlers, sweep
from services.mapping.election import OwnerCause, TriggerKind
from services.mapping.publishing import MappingContext
from services.mapping.report_batch import IncomingReport, Refusal
from tests.contract.mapping_store import created, instance
from tests.mapping_fakes import MemoryMappingStore


@dataclass
class Outlets:
    """What the handlers published and dead-lettered."""

    records: list[tuple[str, Any]] = field(default_factory=list)
    refused_renewals: list[tuple[IncomingReport, Refusal]] = field(default_factory=list)

    async def publish(self, topic: topics.Topic, records: Sequence[tuple[str, bytes]]) -> None:
        self.records.extend((topic.name, topic.parse(value)) for _, value in records)

    async def refuse_renewal(self, item: IncomingReport, refusal: Refusal) -> None:
        self.refused_renewals.append((item, refusal))

    def states(self) -> list[HaVipMappingChanged]:
        return [value for name, value in self.records if name == topics.MAPPINGS.name]

    def results(self) -> list[CommandSucceeded | CommandRejected]:
        return [value for name, value in self.records if name == topics.RESULTS.name]

    def owners(self) -> list[str | None]:
        return [s.owner.instance_id if s.owner else None for s in self.states()]


@pytest.fixture
def store() -> MemoryMappingStore:
    return MemoryMappingStore()


@pytest.fixture
def outlets() -> Outlets:
    return Outlets()


@pytest.fixture
def context(store: MemoryMappingStore, outlets: Outlets) -> MappingContext:
    return MappingContext(store, outlets.publish, outlets.refuse_renewal)


def attach(instance_id: str, command_id: str | None = None) -> AttachmentAccepted:
    return AttachmentAccepted(
        command_id=command_id or f"attach-{instance_id}",
        tenant_id="tenant-a",
        havip_id="havip-1",
        target_id=instance_id,
        instance_id=instance_id,
    )


def reported(
    instance_id: str,
    state: VrrpState,
    seq: int,
    at: datetime,
    *,
    priority: int = 100,
    lease: float | None = 2.5,
    source: ReportSource = ReportSource.AGENT,
) -> VrrpReported:
    return VrrpReported(
        havip_id="havip-1",
        tenant_id="tenant-a",
        instance_id=instance_id,
        state=state,
        priority=priority,
        seq=seq,
        reported_at=at,
        received_at=at,
        lease_seconds=lease if state is VrrpState.MASTER else None,
        source=source,
    )


async def two_running(context: MappingContext, *commands: Accepted) -> None:
    """havip-1 created, i-a and i-b running and attached (and any further commands applied)."""
    for change in (instance("i-a", "10.0.0.11"), instance("i-b", "10.0.0.12")):
        await handlers.on_inventory(context, change)
    for command in (created(), attach("i-a"), attach("i-b"), *commands):
        await handlers.on_accepted(context, command)


async def test_a_command_is_applied_once_published_and_answered_the_same_when_redelivered(
    context: MappingContext, outlets: Outlets, store: MemoryMappingStore
) -> None:
    await handlers.on_accepted(context, created())
    await handlers.on_accepted(context, created())
    assert [(s.version, s.status) for s in outlets.states()] == [(1, HaVipStatus.AVAILABLE)] * 2
    assert [type(r) for r in outlets.results()] == [CommandSucceeded, CommandSucceeded]
    assert store.tables.havips["havip-1"].published_version == 1


async def test_an_attachment_of_a_deleted_instance_is_refused_and_refused_again(
    context: MappingContext, outlets: Outlets
) -> None:
    await handlers.on_inventory(context, instance("i-gone", "10.0.0.9", InstanceStatus.DELETED))
    await handlers.on_accepted(context, created())
    for _ in range(2):  # redelivered: the stored refusal, not a second try
        await handlers.on_accepted(context, attach("i-gone"))
    refusals = [r for r in outlets.results() if isinstance(r, CommandRejected)]
    assert [(r.code, r.command_type) for r in refusals] == [(ErrorCode.INSTANCE_STATUS, "AttachHaVip")] * 2
    assert outlets.states()[-1].attachments == []


async def test_a_havip_with_an_attachment_cannot_be_deleted(context: MappingContext, outlets: Outlets) -> None:
    await two_running(context)
    await handlers.on_accepted(
        context, HaVipDeletionAccepted(command_id="d-1", tenant_id="tenant-a", havip_id="havip-1")
    )
    [refused] = [r for r in outlets.results() if isinstance(r, CommandRejected)]
    assert refused.code == ErrorCode.DEPENDENCY_HAVIP and "2 attachment(s) and 0 EIP(s)" in refused.reason
    assert outlets.states()[-1].status is HaVipStatus.IN_USE


async def test_a_command_the_tables_cannot_hold_is_answered_and_changes_nothing(
    context: MappingContext, outlets: Outlets, store: MemoryMappingStore
) -> None:
    await handlers.on_accepted(context, created(ip_address="not-an-address"))
    [refused] = outlets.results()
    assert isinstance(refused, CommandRejected) and refused.code == ErrorCode.APPLY_FAILED
    assert store.tables.havips == {} and "havip-1" in {h for h, _ in store.tables.commands.values()}


async def test_a_master_report_makes_its_instance_owner_and_the_state_goes_out(
    context: MappingContext, outlets: Outlets
) -> None:
    await two_running(context)
    now = utcnow()
    refusals = await handlers.on_reports(
        context, [reported("i-a", VrrpState.MASTER, 1, now), reported("i-z", VrrpState.MASTER, 1, now)]
    )
    assert [(r.index, r.code) for r in refusals] == [(1, ErrorCode.REPORTER_NOT_ATTACHED)]
    last = outlets.states()[-1]
    assert last.owner is not None and (last.owner.instance_id, last.owner.host_id) == ("i-a", "host-i-a")
    assert last.report_received_at == now


async def test_detaching_the_owner_withdraws_its_claim_so_a_redelivered_master_stays_stale(
    context: MappingContext, outlets: Outlets, store: MemoryMappingStore
) -> None:
    await two_running(context)
    claim = reported("i-a", VrrpState.MASTER, 5, utcnow(), lease=None)
    await handlers.on_reports(context, [claim])
    detach = DetachmentAccepted(command_id="det-a", tenant_id="tenant-a", havip_id="havip-1", target_id="i-a")
    await handlers.on_accepted(context, detach)
    assert outlets.owners()[-2:] == ["i-a", None]
    kept = store.tables.reports[("havip-1", "i-a")]
    assert (kept.seq, kept.state, kept.expires_at) == (5, VrrpState.STOP, None)
    await handlers.on_accepted(context, attach("i-a", "attach-a-again"))
    await handlers.on_reports(context, [claim])  # the old MASTER, redelivered
    assert outlets.owners()[-1] is None
    change = store.tables.owner_changes[-1]
    assert (change.change.cause, change.trigger.kind) == (OwnerCause.OWNER_DETACHED, TriggerKind.COMMAND)


async def test_a_stopped_owner_loses_the_havip_to_the_live_claim(context: MappingContext, outlets: Outlets) -> None:
    await two_running(context)
    now = utcnow()
    await handlers.on_reports(
        context,
        [reported("i-a", VrrpState.MASTER, 1, now), reported("i-b", VrrpState.MASTER, 1, now, priority=90)],
    )
    await handlers.on_inventory(context, instance("i-a", "10.0.0.11", InstanceStatus.STOPPED, revision=2))
    await handlers.on_inventory(context, instance("i-a", "10.0.0.11", InstanceStatus.STOPPED, revision=2))
    assert outlets.owners()[-1] == "i-b" and outlets.owners().count("i-b") == 1


async def test_a_late_agent_renewal_does_not_give_a_stopped_master_the_havip_back(
    context: MappingContext, outlets: Outlets, store: MemoryMappingStore
) -> None:
    # The keepalived lab once saw n1, nobody, n1: the observer's STOP (a priority-0 advert), then
    # n1's agent renewal sent just before keepalived stopped, taken from claim_renewals by the sweep.
    await two_running(context)
    now = utcnow()
    await handlers.on_reports(context, [reported("i-a", VrrpState.MASTER, 40, now)])
    stop = reported("i-a", VrrpState.STOP, 7, now + timedelta(seconds=1), source=ReportSource.OBSERVER)
    await handlers.on_reports(context, [stop])
    late = reported("i-a", VrrpState.MASTER, 41, now + timedelta(seconds=1.004))
    store.leave_renewal(late)
    assert await sweep.apply_renewals(context) == 1
    assert outlets.owners()[-2:] == ["i-a", None]
    assert store.tables.reports[("havip-1", "i-a")].state is VrrpState.STOP


async def test_renewals_that_only_extend_a_live_claim_publish_nothing(
    context: MappingContext, outlets: Outlets, store: MemoryMappingStore
) -> None:
    await two_running(context)
    now = utcnow()
    await handlers.on_reports(context, [reported("i-a", VrrpState.MASTER, 1, now)])
    published = len(outlets.states())
    renewed_at = now + timedelta(seconds=1)
    store.leave_renewal(reported("i-a", VrrpState.MASTER, 2, renewed_at))
    assert await sweep.apply_renewals(context) == 1
    assert len(outlets.states()) == published
    assert store.tables.reports[("havip-1", "i-a")].expires_at == renewed_at + timedelta(seconds=2.5)


async def test_an_owner_whose_lease_ran_out_hands_over_to_the_live_claim(
    context: MappingContext, outlets: Outlets, store: MemoryMappingStore
) -> None:
    await two_running(context)
    now = utcnow()
    await handlers.on_reports(
        context,
        [reported("i-a", VrrpState.MASTER, 1, now), reported("i-b", VrrpState.MASTER, 1, now, lease=10.0, priority=90)],
    )
    assert await sweep.expire_leases(context, now + timedelta(seconds=1)) == 0
    assert await sweep.expire_leases(context, now + timedelta(seconds=3)) == 1
    assert outlets.owners()[-1] == "i-b"
    last = store.tables.owner_changes[-1]
    assert (last.change.cause, last.trigger.kind) == (OwnerCause.OWNER_CLAIM_LAPSED, TriggerKind.LEASE_EXPIRY)
    assert await sweep.expire_leases(context, now + timedelta(seconds=3)) == 0  # once


async def test_what_was_committed_but_never_published_goes_out_on_the_sweep(
    context: MappingContext, outlets: Outlets, store: MemoryMappingStore
) -> None:
    async def broker_away(topic: topics.Topic, records: Sequence[tuple[str, bytes]]) -> None:
        raise ConnectionError("the broker is away")

    failing = MappingContext(store, broker_away, outlets.refuse_renewal)
    with pytest.raises(ConnectionError):
        await handlers.on_accepted(failing, created())
    assert await sweep.publish_unpublished(context) == 0  # too recent: the handler may still publish it
    store.now = lambda: utcnow() + timedelta(seconds=5)
    assert await sweep.publish_unpublished(context) == 1
    assert [s.version for s in outlets.states()] == [1]
    assert await sweep.publish_unpublished(context) == 0


async def test_observed_renewals_are_refused_by_record(context: MappingContext, outlets: Outlets) -> None:
    await two_running(context)
    now = utcnow()
    await handlers.on_reports(context, [reported("i-a", VrrpState.MASTER, 1, now, source=ReportSource.OBSERVER)])

    def renewed(havip_id: str, seq: int) -> ObservedClaimsRenewed:
        claim = RenewedClaim(
            havip_id=havip_id,
            tenant_id="tenant-a",
            instance_id="i-a",
            priority=100,
            seq=seq,
            seen_at=now + timedelta(seconds=seq),
        )
        return ObservedClaimsRenewed(observer_id="host-i-a", lease_seconds=15, claims=[claim])

    refusals = await handlers.on_observed_renewals(context, [renewed("havip-1", 2), renewed("havip-9", 3)])
    assert [(r.index, r.code) for r in refusals] == [(1, ErrorCode.UNKNOWN_HAVIP)]
    assert outlets.owners()[-1] == "i-a"


async def test_a_batch_takes_the_renewals_of_its_havips_with_it(
    context: MappingContext, outlets: Outlets, store: MemoryMappingStore
) -> None:
    await two_running(context)
    now = utcnow()
    await handlers.on_reports(context, [reported("i-a", VrrpState.MASTER, 1, now)])
    renewed_at = now + timedelta(seconds=2)
    store.leave_renewal(reported("i-a", VrrpState.MASTER, 2, renewed_at))
    # i-b claims at 3 s with a lower priority: i-a's claim, renewed at 2 s, still outranks it.
    later = now + timedelta(seconds=3)
    assert await handlers.on_reports(context, [reported("i-b", VrrpState.MASTER, 1, later, priority=90)]) == []
    assert outlets.owners()[-1] == "i-a"
    assert store.tables.renewals[("havip-1", "i-a")].taken
    assert isinstance(outlets.states()[-1], HaVipMappingChanged)
