"""Who owns a HAVIP: keepalived decides, this module only follows it.

Pure functions over what the mapping tables hold for one HAVIP, evaluated at
a moment in time (a report's arrival, or the clock when a lease runs out).
The owner is recomputed from the stored state each time, never patched
incrementally, so a replayed or re-ordered message cannot leave a different
answer behind.

The rules (DESIGN.md, "Owner election rules"):
- A MASTER claim is live while its lease runs (the agent renews it while
  keepalived holds MASTER); a claim without a lease (a plain notify script,
  which cannot renew) is live until the instance reports another state.
- Among live claims of attached, running instances the higher priority wins,
  then the higher primary IP (RFC 5798 §6.4.3), so during a split brain the
  traffic stays on the node keepalived keeps once the nodes hear each other.
- A lapsed claim alone does not take the HAVIP away: a killed keepalived
  leaves the VIP on its interface and ARP would keep sending traffic there
  until a backup announces itself. The owner changes when another instance
  holds a live claim, or when the owner reports another state, is detached
  or stops running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address

from schemas.messages import InstanceStatus, ReportSource, VrrpState, report_order

ELIGIBLE_STATUSES = frozenset({InstanceStatus.RUNNING})


@dataclass(frozen=True)
class Candidate:
    """An attached instance (or ENI) that could own the HAVIP."""

    target_id: str
    instance_id: str
    primary_ip: IPv4Address
    instance_status: InstanceStatus

    @property
    def eligible(self) -> bool:
        # A stopped or deleted instance cannot receive traffic whatever it last said.
        return self.instance_status in ELIGIBLE_STATUSES


@dataclass(frozen=True)
class VrrpReport:
    """The last VRRP state an instance reported for this HAVIP."""

    instance_id: str
    state: VrrpState
    priority: int
    seq: int
    reported_at: datetime
    received_at: datetime
    # When a MASTER claim stops being live unless renewed; None: no lease (live until superseded).
    expires_at: datetime | None = None
    source: ReportSource = ReportSource.AGENT

    def live_at(self, at: datetime) -> bool:
        return self.state is VrrpState.MASTER and (self.expires_at is None or at < self.expires_at)

    def newer_than(self, other: VrrpReport) -> bool:
        """Whether this report is the instance's later word than `other`.

        One source orders its own reports (the agent numbers them; the observer numbers by its
        clock). Between the agent and the observer their numbers mean nothing to each other, so
        the platform's clock decides: when the gateway received the agent's report, when the
        observer saw the frame. A guest whose clock runs ahead can then never make the observer's
        claims stale, nor the observer the agent's; each source's own word is always heard.
        """
        if self.source is other.source:
            return report_order(self.seq, self.reported_at) > report_order(other.seq, other.reported_at)
        return self.received_at > other.received_at


class ReportVerdict(StrEnum):
    FRESH = "fresh"
    STALE = "stale"  # older than, or a replay of, what we hold: changes nothing
    NOT_ATTACHED = "not-attached"  # never allowed to own: dead-lettered


class OwnerCause(StrEnum):
    MASTER_REPORTED = "MasterReported"  # no owner before; a live claim takes it
    HIGHER_PRIORITY_CLAIM = "HigherPriorityClaim"  # both claim MASTER; the one keepalived keeps wins
    OWNER_CLAIM_LAPSED = "OwnerClaimLapsed"  # the owner's lease ran out while another claim was live
    TAKEOVER = "Takeover"  # the owner reported another state; a live claim takes over
    OWNER_RELEASED = "OwnerReleased"  # the owner reported another state; nobody claims it
    OWNER_DETACHED = "OwnerDetached"
    OWNER_UNAVAILABLE = "OwnerInstanceUnavailable"  # stopped or deleted


class TriggerKind(StrEnum):
    VRRP_REPORT = "VrrpReport"
    LEASE_EXPIRY = "LeaseExpiry"
    COMMAND = "Command"
    INVENTORY = "Inventory"


@dataclass(frozen=True)
class Trigger:
    """What made the mapping service look again: stored with every owner change it causes."""

    kind: TriggerKind
    message_id: str | None = None
    instance_id: str | None = None
    seq: int | None = None
    lease_expired_at: datetime | None = None


@dataclass(frozen=True)
class OwnerChange:
    previous: Candidate | None
    owner: Candidate | None
    cause: OwnerCause
    detail: str


@dataclass(frozen=True)
class Contest:
    """One HAVIP as the election sees it: its owner, who may own it, and what each last said."""

    owner_target_id: str | None
    candidates: tuple[Candidate, ...]
    reports: Mapping[str, VrrpReport]  # by instance_id

    def candidate(self, target_id: str | None) -> Candidate | None:
        return next((c for c in self.candidates if c.target_id == target_id), None)

    def with_report(self, report: VrrpReport) -> Contest:
        return replace(self, reports={**self.reports, report.instance_id: report})

    def claims(self, candidate: Candidate) -> bool:
        """Whether this candidate may own and its last word is MASTER (live or not)."""
        report = self.reports.get(candidate.instance_id)
        return candidate.eligible and report is not None and report.state is VrrpState.MASTER

    def live_claim(self, candidate: Candidate, at: datetime) -> bool:
        report = self.reports.get(candidate.instance_id)
        return candidate.eligible and report is not None and report.live_at(at)


def judge_report(contest: Contest, report: VrrpReport, *, renewal: bool = False) -> ReportVerdict:
    """How a report counts; `renewal`: it only repeats a MASTER claim its source made before."""
    last = contest.reports.get(report.instance_id)
    if last is not None and not report.newer_than(last):
        return ReportVerdict.STALE
    if renewal and last is not None and ended_by_other_source(last, report):
        return ReportVerdict.STALE
    if not any(c.instance_id == report.instance_id for c in contest.candidates):
        return ReportVerdict.NOT_ATTACHED
    return ReportVerdict.FRESH


def ended_by_other_source(stored: VrrpReport, renewal: VrrpReport) -> bool:
    """Whether the other source saw this claim end (a state other than MASTER), so that a renewal
    from this one must not bring it back.

    The agent learns of a state from keepalived's notify, the observer from the wire, and the one
    that learns later still renews the claim for a moment: an agent renewal sent just before
    keepalived's priority-0 advert reaches the gateway a few ms after the observer reported STOP.
    Ordered by receive time it looks newer and would give the HAVIP back to a stopped node for up
    to a lease. A claim that starts again is a state change from whichever source hears it (the
    first MASTER after a STOP, BACKUP or FAULT, a new priority, a claim after a lapse), never a
    renewal, so no real MASTER is missed. A lapse by silence is not an end: the other source's
    renewals are what keep a claim live when one source goes quiet.
    """
    return stored.source is not renewal.source and stored.state is not VrrpState.MASTER


def only_extends(stored: VrrpReport | None, renewal: VrrpReport) -> bool:
    """Whether `renewal` changes nothing but when the claim it repeats runs out.

    The stored report is a MASTER claim with a lease, live when the renewal arrived, at the same
    priority, and older. Then the live claims and their ranks are what they were, so at that
    moment no owner changes; only a later lapse (which the lease sweep judges) is moved back.
    """
    return (
        stored is not None
        and stored.state is VrrpState.MASTER
        and renewal.state is VrrpState.MASTER
        and stored.expires_at is not None
        and renewal.expires_at is not None
        and stored.priority == renewal.priority
        and stored.live_at(renewal.received_at)
        and renewal.newer_than(stored)
    )


def renewed(stored: VrrpReport | None, report: VrrpReport) -> VrrpReport:
    """What is kept of a fresh report: itself; or, when it only renews a live claim the other source
    heard (the agent's renewal of a claim the observer holds, or the other way round), itself with
    the later of the two lease ends.

    The two sources renew on their own clocks (the agent every second for 2.5 s, the observer every
    5 s for 15 s): were the agent to go quiet with keepalived still advertising, the agent's short
    lease would lapse the claim between the observer's renewals, and a split brain would flap. A
    renewal only says the claim is still live; only a state, a lapse (lease 0) or silence ends it.
    """
    if (
        stored is not None
        and stored.expires_at is not None
        and report.expires_at is not None
        and stored.source is not report.source
        and report.live_at(report.received_at)
        and only_extends(stored, report)
    ):
        return replace(report, expires_at=max(stored.expires_at, report.expires_at))
    return report


def withdrawn(report: VrrpReport) -> VrrpReport:
    """What is kept of a report that cannot count (its instance is not attached): its place in
    the sequence, so the same report redelivered after an attach is still stale, and no claim."""
    return replace(report, state=VrrpState.STOP, expires_at=None)


def withdrawn_on_detach(contest: Contest, target_id: str) -> list[VrrpReport]:
    """The reports withdrawn when `target_id` is detached: its instance's, unless the instance is
    still attached another way (by itself and by an ENI).

    A detached instance's old MASTER must not count if it is attached again later, and a
    redelivered report from before the detach must stay stale: its place is kept, its claim goes.
    """
    detached = contest.candidate(target_id)
    if detached is None:
        return []
    if any(c.instance_id == detached.instance_id for c in contest.candidates if c.target_id != target_id):
        return []
    report = contest.reports.get(detached.instance_id)
    return [] if report is None else [withdrawn(report)]


def rank(candidate: Candidate, report: VrrpReport) -> tuple[int, IPv4Address, str]:
    # RFC 5798 §6.4.3: higher priority, then higher primary address; the id only makes it total.
    return (report.priority, candidate.primary_ip, candidate.target_id)


def elect(contest: Contest, at: datetime) -> Candidate | None:
    """The owner the stored reports call for at `at`."""
    live = [c for c in contest.candidates if contest.live_claim(c, at)]
    if live:
        return max(live, key=lambda c: rank(c, contest.reports[c.instance_id]))
    owner = contest.candidate(contest.owner_target_id)
    if owner is not None and contest.claims(owner):
        return owner  # its claim lapsed, but nobody else claims it: traffic stays where ARP would send it
    return None


def lapse_due(contest: Contest, at: datetime) -> bool:
    """Whether the owner's claim has lapsed while another live claim waits: the owner must change now."""
    owner = contest.candidate(contest.owner_target_id)
    if owner is None or contest.live_claim(owner, at):
        return False
    return any(contest.live_claim(c, at) for c in contest.candidates if c.target_id != owner.target_id)


def explain(before: Contest, after: Contest, owner: Candidate | None, at: datetime) -> OwnerChange | None:
    """Why the owner changed (the history an operator reads), or None if it did not."""
    previous = before.candidate(before.owner_target_id)
    if _target(previous) == _target(owner):
        return None
    if previous is None:
        assert owner is not None
        return OwnerChange(None, owner, OwnerCause.MASTER_REPORTED, _claim(after, owner))
    now = after.candidate(previous.target_id)
    if now is None:
        return OwnerChange(
            previous, owner, OwnerCause.OWNER_DETACHED, _handover(f"{previous.instance_id} was detached", after, owner)
        )
    if not now.eligible:
        return OwnerChange(
            previous,
            owner,
            OwnerCause.OWNER_UNAVAILABLE,
            _handover(f"{previous.instance_id} is {now.instance_status.value}", after, owner),
        )
    theirs = after.reports.get(previous.instance_id)
    if after.claims(now) and owner is not None and theirs is not None:
        ours = after.reports[owner.instance_id]
        if theirs.live_at(at):
            return OwnerChange(
                previous,
                owner,
                OwnerCause.HIGHER_PRIORITY_CLAIM,
                f"both claim MASTER: {owner.instance_id} (priority {ours.priority}, {owner.primary_ip}) outranks "
                f"{previous.instance_id} (priority {theirs.priority}, {previous.primary_ip})",
            )
        assert theirs.expires_at is not None
        return OwnerChange(
            previous,
            owner,
            OwnerCause.OWNER_CLAIM_LAPSED,
            f"{previous.instance_id}'s claim lapsed at {theirs.expires_at.isoformat()} (no renewal); "
            f"{_claim(after, owner)}",
        )
    said = theirs.state.value if theirs else "nothing"
    if owner is None:
        return OwnerChange(previous, None, OwnerCause.OWNER_RELEASED, f"{previous.instance_id} reported {said}")
    return OwnerChange(
        previous, owner, OwnerCause.TAKEOVER, f"{previous.instance_id} reported {said}; {_claim(after, owner)}"
    )


def _target(candidate: Candidate | None) -> str | None:
    return candidate.target_id if candidate else None


def _claim(contest: Contest, owner: Candidate) -> str:
    report = contest.reports[owner.instance_id]
    lease = "no lease" if report.expires_at is None else f"lease until {report.expires_at.isoformat()}"
    return f"{owner.instance_id} claims MASTER (priority {report.priority}, {lease}, seen by the {report.source.value})"


def _handover(why: str, contest: Contest, owner: Candidate | None) -> str:
    return why if owner is None else f"{why}; {_claim(contest, owner)}"
