"""Who owns a HAVIP: keepalived decides, this module only follows it.

Pure functions over what the mapping tables hold for one HAVIP. The owner is
recomputed from the stored state each time, never patched incrementally, so a
replayed or re-ordered message cannot leave a different answer behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address

from schemas.messages import VrrpState

ELIGIBLE_STATUSES = frozenset({"Running"})


@dataclass(frozen=True)
class Candidate:
    """An attached instance (or ENI) that could own the HAVIP."""

    target_id: str
    instance_id: str
    primary_ip: IPv4Address
    instance_status: str

    @property
    def eligible(self) -> bool:
        # A stopped or deleted instance cannot receive traffic whatever it last said.
        return self.instance_status in ELIGIBLE_STATUSES


@dataclass(frozen=True)
class Report:
    """The last VRRP state an instance reported for this HAVIP."""

    instance_id: str
    state: VrrpState
    priority: int
    seq: int
    reported_at: datetime
    received_at: datetime


class ReportVerdict(StrEnum):
    FRESH = "fresh"
    STALE = "stale"  # older than, or a replay of, what we hold: changes nothing
    NOT_ATTACHED = "not-attached"  # never allowed to own: dead-lettered


class OwnerCause(StrEnum):
    MASTER_REPORTED = "MasterReported"
    SPLIT_BRAIN_RESOLVED = "SplitBrainResolved"
    OWNER_RELEASED = "OwnerReleased"
    OWNER_DETACHED = "OwnerDetached"
    OWNER_UNAVAILABLE = "OwnerInstanceUnavailable"
    TAKEOVER = "Takeover"


@dataclass(frozen=True)
class OwnerChange:
    previous: Candidate | None
    owner: Candidate | None
    cause: OwnerCause
    detail: str


@dataclass(frozen=True)
class HaVipView:
    owner_target_id: str | None
    candidates: tuple[Candidate, ...]
    reports: Mapping[str, Report]  # by instance_id

    def candidate(self, target_id: str | None) -> Candidate | None:
        return next((c for c in self.candidates if c.target_id == target_id), None)


def judge_report(view: HaVipView, report: Report) -> ReportVerdict:
    if not any(c.instance_id == report.instance_id for c in view.candidates):
        return ReportVerdict.NOT_ATTACHED
    last = view.reports.get(report.instance_id)
    # An agent numbers its reports; the sequence orders them, its clock breaks ties.
    if last is not None and (report.seq, report.reported_at) <= (last.seq, last.reported_at):
        return ReportVerdict.STALE
    return ReportVerdict.FRESH


def elect(view: HaVipView, split_brain_window: timedelta) -> Candidate | None:
    """The owner the stored reports call for.

    Every eligible instance whose last report is MASTER claims the HAVIP. The
    newest claim wins, because keepalived only promotes a backup after it
    stopped hearing the master. Claims within `split_brain_window` of the
    newest are simultaneous (split brain): as in RFC 5798 §6.4.3 the higher
    priority wins, then the higher primary IP.
    """
    claims = [
        (c, view.reports[c.instance_id])
        for c in view.candidates
        if c.eligible and c.instance_id in view.reports and view.reports[c.instance_id].state == VrrpState.MASTER
    ]
    if not claims:
        return None
    newest = max(report.received_at for _, report in claims)
    contenders = [(c, r) for c, r in claims if newest - r.received_at <= split_brain_window]
    return max(contenders, key=lambda cr: (cr[1].priority, cr[0].primary_ip, cr[0].target_id))[0]


def explain(
    before: HaVipView, after: HaVipView, owner: Candidate | None, split_brain_window: timedelta
) -> OwnerChange | None:
    """Why the owner changed (the history an operator reads), or None if it did not."""
    previous = before.candidate(before.owner_target_id)
    if _target(previous) == _target(owner):
        return None
    if owner is None:
        assert previous is not None
        return OwnerChange(previous, None, _loss_cause(after, previous), _loss_detail(after, previous))
    report = after.reports[owner.instance_id]
    claim = f"{owner.instance_id} reported MASTER (priority {report.priority})"
    if previous is None:
        return OwnerChange(None, owner, OwnerCause.MASTER_REPORTED, claim)
    theirs = after.reports.get(previous.instance_id)
    if (
        _claims_master(after, previous)
        and theirs
        and abs(report.received_at - theirs.received_at) <= split_brain_window
    ):
        return OwnerChange(
            previous,
            owner,
            OwnerCause.SPLIT_BRAIN_RESOLVED,
            f"both claim MASTER: {owner.instance_id} (priority {report.priority}, {owner.primary_ip}) wins over "
            f"{previous.instance_id} (priority {theirs.priority}, {previous.primary_ip})",
        )
    if _claims_master(after, previous):
        return OwnerChange(
            previous,
            owner,
            OwnerCause.MASTER_REPORTED,
            f"{claim}, after {previous.instance_id}'s last MASTER report: keepalived promoted a backup",
        )
    if before.reports.get(owner.instance_id) != report:
        return OwnerChange(previous, owner, OwnerCause.MASTER_REPORTED, f"{claim}; {_loss_detail(after, previous)}")
    return OwnerChange(
        previous, owner, OwnerCause.TAKEOVER, f"{owner.instance_id} was MASTER; {_loss_detail(after, previous)}"
    )


def _target(candidate: Candidate | None) -> str | None:
    return candidate.target_id if candidate else None


def _claims_master(view: HaVipView, candidate: Candidate) -> bool:
    current = view.candidate(candidate.target_id)
    report = view.reports.get(candidate.instance_id)
    return current is not None and current.eligible and report is not None and report.state == VrrpState.MASTER


def _loss_cause(after: HaVipView, previous: Candidate) -> OwnerCause:
    current = after.candidate(previous.target_id)
    if current is None:
        return OwnerCause.OWNER_DETACHED
    if not current.eligible:
        return OwnerCause.OWNER_UNAVAILABLE
    return OwnerCause.OWNER_RELEASED


def _loss_detail(after: HaVipView, previous: Candidate) -> str:
    current = after.candidate(previous.target_id)
    if current is None:
        return f"{previous.instance_id} was detached"
    if not current.eligible:
        return f"{previous.instance_id} is {current.instance_status}"
    report = after.reports.get(previous.instance_id)
    return f"{previous.instance_id} reported {report.state.value if report else 'nothing'}"
