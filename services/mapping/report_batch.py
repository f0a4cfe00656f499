"""Many VRRP reports decided at once, in memory: what each does to its HAVIP.

The mapping worker applies reports in batches (what arrived while it applied
the last one, each partition's in order). It locks every HAVIP of the batch, loads their contests once,
and this module walks the reports in the order they arrived, exactly as the
one-report-at-a-time path would: each report is judged against the contest
as the reports before it left it, the owner is elected at the report's
arrival, and every owner change gets its own version. The caller then
stores the plan in a bounded number of statements and publishes the HAVIPs
whose state changed.

A renewal (the common case: every live master renews every second) goes
through the same rules; it only extends a claim, so its whole cost is one
row in the batch's single upsert of reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from schemas.errors import ErrorCode
from schemas.messages import HaVipStatus, ReportSource, VrrpState
from services.mapping.election import (
    Candidate,
    Contest,
    OwnerChange,
    ReportVerdict,
    Trigger,
    TriggerKind,
    VrrpReport,
    elect,
    explain,
    judge_report,
    renewed,
    withdrawn,
)


@dataclass(frozen=True)
class LockedHavip:
    """A HAVIP as the batch found it under its row lock."""

    havip_id: str
    tenant_id: str
    version: int
    published_version: int
    contest: Contest


@dataclass(frozen=True)
class IncomingReport:
    """One VRRP report of the batch, in arrival order."""

    havip_id: str
    tenant_id: str
    message_id: str
    report: VrrpReport
    # A lease renewal (the gateways' claim_renewals, an observer's ObservedClaimsRenewed): it only
    # repeats a claim, so it extends or revives one but never starts one the other source ended.
    renewal: bool = False


def claim_renewal(
    havip_id: str,
    tenant_id: str,
    message_id: str,
    instance_id: str,
    *,
    priority: int,
    seq: int,
    reported_at: datetime,
    received_at: datetime,
    lease_seconds: float,
    source: ReportSource = ReportSource.AGENT,
) -> IncomingReport:
    """A renewal as the report it stands for: a MASTER claim at its priority, live for its lease
    from when the platform received (or the observer saw) it."""
    report = VrrpReport(
        instance_id=instance_id,
        state=VrrpState.MASTER,
        priority=priority,
        seq=seq,
        reported_at=reported_at,
        received_at=received_at,
        expires_at=received_at + timedelta(seconds=lease_seconds),
        source=source,
    )
    return IncomingReport(havip_id, tenant_id, message_id, report, renewal=True)


@dataclass(frozen=True)
class Refusal:
    """A report that cannot count: dead-lettered with this code (`index` into the batch)."""

    index: int
    code: ErrorCode
    message: str


@dataclass(frozen=True)
class OwnerOutcome:
    """An owner change to store, at the version it happened."""

    havip_id: str
    version: int
    owner: Candidate | None
    change: OwnerChange
    trigger: Trigger


@dataclass(frozen=True)
class HavipAfter:
    """What the `havips` row holds once the batch is stored (only for HAVIPs whose owner changed)."""

    owner_target_id: str | None
    status: HaVipStatus
    version: int


@dataclass
class ReportPlan:
    # The last report per (havip_id, instance_id): what the vrrp_reports rows end as.
    reports: dict[tuple[str, str], VrrpReport] = field(default_factory=dict)
    outcomes: list[OwnerOutcome] = field(default_factory=list)
    havips: dict[str, HavipAfter] = field(default_factory=dict)
    # HAVIPs to publish: changed now, or committed earlier and never published (a crash between the two).
    publish: set[str] = field(default_factory=set)
    # When the gateway accepted the report behind each HAVIP's last change (carried to the forwarder).
    caused_at: dict[str, datetime] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)
    verdicts: Counter[ReportVerdict] = field(default_factory=Counter)
    # Each HAVIP's contest as the batch leaves it.
    contests: dict[str, Contest] = field(default_factory=dict)


def plan_reports(locked: Mapping[str, LockedHavip], incoming: Sequence[IncomingReport]) -> ReportPlan:
    """Decide every report of a batch against the HAVIPs it found locked."""
    plan = ReportPlan()
    contests = plan.contests
    contests.update((havip_id, row.contest) for havip_id, row in locked.items())
    versions = {havip_id: row.version for havip_id, row in locked.items()}
    for index, item in enumerate(incoming):
        row = locked.get(item.havip_id)
        if row is None or row.tenant_id != item.tenant_id:
            plan.refusals.append(Refusal(index, ErrorCode.UNKNOWN_HAVIP, f"no HAVIP {item.havip_id} for this tenant"))
            continue
        before = contests[item.havip_id]
        report = item.report
        verdict = judge_report(before, report, renewal=item.renewal)
        plan.verdicts[verdict] += 1
        key = (item.havip_id, report.instance_id)
        if verdict is ReportVerdict.NOT_ATTACHED:
            # Its sequence number is kept: redelivered after an attach, it stays stale.
            plan.reports[key] = withdrawn(report)
            contests[item.havip_id] = before.with_report(plan.reports[key])
            plan.refusals.append(
                Refusal(
                    index,
                    ErrorCode.REPORTER_NOT_ATTACHED,
                    f"{report.instance_id} is not attached to {item.havip_id}; only attached instances may own it",
                )
            )
            continue
        if verdict is ReportVerdict.STALE:
            # Most likely redelivered after a crash: publish what the first pass may not have.
            if row.published_version < versions[item.havip_id]:
                plan.publish.add(item.havip_id)
            continue
        report = renewed(before.reports.get(report.instance_id), report)
        plan.reports[key] = report
        after = before.with_report(report)
        # Evaluated at the report's arrival, so a replay decides exactly as the first pass did.
        owner = elect(after, report.received_at)
        change = explain(before, after, owner, report.received_at)
        if change is None:
            contests[item.havip_id] = after
            continue
        owner_target_id = owner.target_id if owner else None
        contests[item.havip_id] = replace(after, owner_target_id=owner_target_id)
        versions[item.havip_id] += 1
        trigger = Trigger(
            TriggerKind.VRRP_REPORT, message_id=item.message_id, instance_id=report.instance_id, seq=report.seq
        )
        plan.outcomes.append(OwnerOutcome(item.havip_id, versions[item.havip_id], owner, change, trigger))
        plan.havips[item.havip_id] = HavipAfter(owner_target_id, havip_status(after), versions[item.havip_id])
        plan.publish.add(item.havip_id)
        plan.caused_at[item.havip_id] = report.received_at
    return plan


def in_arrival_order(reports: Sequence[IncomingReport], renewals: Sequence[IncomingReport]) -> list[IncomingReport]:
    """Reports as read from the log, with the renewals of the same HAVIPs put where they arrived.

    The log's order is kept: each renewal goes just before the first report that reached the
    gateway after it, so every report is judged against the claims that were live when it
    arrived, as if every renewal had been applied the moment it came.
    """
    waiting = sorted(renewals, key=lambda item: item.report.received_at)
    merged: list[IncomingReport] = []
    next_renewal = 0
    for item in reports:
        while next_renewal < len(waiting) and waiting[next_renewal].report.received_at <= item.report.received_at:
            merged.append(waiting[next_renewal])
            next_renewal += 1
        merged.append(item)
    merged.extend(waiting[next_renewal:])
    return merged


def havip_status(contest: Contest) -> HaVipStatus:
    """A HAVIP with an attachment is in use, whoever owns it."""
    return HaVipStatus.IN_USE if contest.candidates else HaVipStatus.AVAILABLE
