"""Owner election follows keepalived: DESIGN.md's owner rules, one test each."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

from schemas.messages import InstanceStatus, ReportSource, VrrpState
from services.mapping.election import (
    Candidate,
    Contest,
    OwnerCause,
    ReportVerdict,
    VrrpReport,
    elect,
    explain,
    judge_report,
    lapse_due,
    renewed,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUNNING = InstanceStatus.RUNNING
A = Candidate("i-a", "i-a", IPv4Address("10.0.0.11"), RUNNING)
B = Candidate("i-b", "i-b", IPv4Address("10.0.0.12"), RUNNING)
C = Candidate("i-c", "i-c", IPv4Address("10.0.0.13"), RUNNING)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def report(
    instance: str,
    state: VrrpState,
    *,
    priority: int = 100,
    seq: int = 1,
    at: float = 0.0,
    lease: float | None = 2.5,
) -> VrrpReport:
    expires = None if lease is None or state is not VrrpState.MASTER else t(at + lease)
    return VrrpReport(instance, state, priority, seq, reported_at=t(at), received_at=t(at), expires_at=expires)


def contest(*reports: VrrpReport, owner: str | None = None, candidates: tuple[Candidate, ...] = (A, B, C)) -> Contest:
    return Contest(owner_target_id=owner, candidates=candidates, reports={r.instance_id: r for r in reports})


def test_an_instance_reporting_master_becomes_owner() -> None:
    assert elect(contest(report("i-a", VrrpState.MASTER)), t(0)) == A


def test_no_master_means_no_owner() -> None:
    assert elect(contest(report("i-a", VrrpState.BACKUP), report("i-b", VrrpState.FAULT)), t(0)) is None


def test_live_claims_go_to_the_higher_priority_whoever_claimed_last() -> None:
    # A split brain: both hold the VIP; keepalived will keep the higher priority once they hear each other.
    first_high = contest(
        report("i-a", VrrpState.MASTER, priority=100, at=0.0),
        report("i-b", VrrpState.MASTER, priority=90, at=1.0),
        owner="i-a",
    )
    assert elect(first_high, t(1.0)) == A
    first_low = contest(
        report("i-b", VrrpState.MASTER, priority=90, at=0.0),
        report("i-a", VrrpState.MASTER, priority=100, at=1.0),
        owner="i-b",
    )
    assert elect(first_low, t(1.0)) == A  # preemption


def test_equal_priorities_go_to_the_higher_primary_ip() -> None:
    both = contest(report("i-b", VrrpState.MASTER, at=0.0), report("i-a", VrrpState.MASTER, at=0.1))
    assert elect(both, t(0.1)) == B  # 10.0.0.12 > 10.0.0.11, RFC 5798 §6.4.3


def test_a_lapsed_owner_keeps_the_havip_until_someone_else_claims_it() -> None:
    killed = contest(report("i-a", VrrpState.MASTER, priority=100, at=0.0), owner="i-a")
    assert elect(killed, t(60)) == A  # keepalived was killed: the VIP stays, and so does the traffic
    backup_promoted = killed.with_report(report("i-b", VrrpState.MASTER, priority=90, at=3.6))
    assert elect(backup_promoted, t(3.6)) == B


def test_a_lapse_with_a_live_competitor_is_due_at_once() -> None:
    split = contest(
        report("i-a", VrrpState.MASTER, priority=100, at=0.0),
        report("i-b", VrrpState.MASTER, priority=90, at=1.0),
        owner="i-a",
    )
    assert not lapse_due(split, t(2.0))
    assert lapse_due(split, t(2.5))  # i-a's lease ran out, i-b's runs until 3.5
    assert elect(split, t(2.5)) == B
    assert not lapse_due(contest(report("i-a", VrrpState.MASTER, at=0.0), owner="i-a"), t(10))


def test_a_notify_script_claim_without_a_lease_stays_live_until_superseded() -> None:
    scripted = contest(report("i-a", VrrpState.MASTER, priority=90, lease=None), owner="i-a")
    assert elect(scripted.with_report(report("i-b", VrrpState.MASTER, priority=80, at=3600)), t(3600)) == A
    released = scripted.with_report(report("i-a", VrrpState.BACKUP, seq=2, at=5, lease=None))
    assert elect(released, t(5)) is None


def test_a_claim_with_lease_zero_is_history_not_a_live_claim() -> None:
    late = contest(report("i-b", VrrpState.MASTER, priority=200, lease=0.0))
    assert elect(late, t(0)) is None


def test_owner_reporting_backup_hands_over_to_another_live_claim() -> None:
    after = contest(
        report("i-a", VrrpState.BACKUP, seq=2, at=1.0), report("i-b", VrrpState.MASTER, at=0.5), owner="i-a"
    )
    assert elect(after, t(1.0)) == B


def test_stopped_or_detached_instances_cannot_own() -> None:
    stopped_a = Candidate("i-a", "i-a", IPv4Address("10.0.0.11"), InstanceStatus.STOPPED)
    reports = (report("i-a", VrrpState.MASTER, priority=200), report("i-b", VrrpState.MASTER))
    assert elect(contest(*reports, candidates=(stopped_a, B)), t(0)) == B
    assert elect(contest(*reports, candidates=(B,)), t(0)) == B
    assert elect(contest(report("i-a", VrrpState.MASTER), candidates=(B,)), t(0)) is None
    # Not even as a lapsed owner.
    assert elect(contest(report("i-a", VrrpState.MASTER), owner="i-a", candidates=(stopped_a, B)), t(10)) is None


def test_reports_from_unattached_instances_are_refused() -> None:
    assert judge_report(contest(candidates=(A,)), report("i-z", VrrpState.MASTER)) is ReportVerdict.NOT_ATTACHED


def test_older_reports_and_replays_change_nothing() -> None:
    current = contest(report("i-a", VrrpState.MASTER, seq=5, at=5.0))
    assert judge_report(current, report("i-a", VrrpState.BACKUP, seq=4, at=9.0)) is ReportVerdict.STALE
    assert judge_report(current, report("i-a", VrrpState.MASTER, seq=5, at=5.0)) is ReportVerdict.STALE
    assert judge_report(current, report("i-a", VrrpState.BACKUP, seq=6, at=6.0)) is ReportVerdict.FRESH
    # Same sequence number, later agent clock: the clock breaks the tie.
    assert judge_report(current, report("i-a", VrrpState.BACKUP, seq=5, at=5.5)) is ReportVerdict.FRESH


def test_every_owner_change_says_why() -> None:
    empty = contest()
    a_master = contest(report("i-a", VrrpState.MASTER, at=0.0))
    change = explain(empty, a_master, A, t(0))
    assert change is not None and change.cause is OwnerCause.MASTER_REPORTED and change.owner == A

    owned = contest(report("i-a", VrrpState.MASTER, at=0.0), owner="i-a")
    released = contest(report("i-a", VrrpState.FAULT, seq=2, at=1.0), owner="i-a")
    change = explain(owned, released, None, t(1))
    assert change is not None and change.cause is OwnerCause.OWNER_RELEASED and "FAULT" in change.detail

    detached = contest(report("i-a", VrrpState.MASTER), owner="i-a", candidates=(B, C))
    change = explain(owned, detached, None, t(1))
    assert change is not None and change.cause is OwnerCause.OWNER_DETACHED

    outranked = owned.with_report(report("i-b", VrrpState.MASTER, priority=200, at=0.3))
    change = explain(owned, outranked, B, t(0.3))
    assert change is not None and change.cause is OwnerCause.HIGHER_PRIORITY_CLAIM

    lapsed = owned.with_report(report("i-b", VrrpState.MASTER, priority=50, at=3.0))
    change = explain(owned, lapsed, B, t(3.0))
    assert change is not None and change.cause is OwnerCause.OWNER_CLAIM_LAPSED and "lapsed" in change.detail

    takeover = contest(
        report("i-a", VrrpState.BACKUP, seq=2, at=1.0), report("i-b", VrrpState.MASTER, at=0.5), owner="i-a"
    )
    change = explain(owned, takeover, B, t(1.0))
    assert change is not None and change.cause is OwnerCause.TAKEOVER


def test_no_change_no_history() -> None:
    owned = contest(report("i-a", VrrpState.MASTER), owner="i-a")
    assert explain(owned, owned, A, t(0)) is None


# --- two sources: the agent in the guest and the observer on the host --------------------------

AGENT, OBSERVER = ReportSource.AGENT, ReportSource.OBSERVER


def test_one_source_orders_its_own_reports_by_its_numbers() -> None:
    older = replace(report("i-a", VrrpState.MASTER, seq=5, at=10.0), source=OBSERVER)
    newer = replace(report("i-a", VrrpState.BACKUP, seq=6, at=1.0), source=OBSERVER)
    assert newer.newer_than(older) and not older.newer_than(newer)


def test_across_sources_the_platforms_clock_decides_never_the_guests_numbers() -> None:
    # A guest whose clock runs a day ahead numbers its reports far above the observer's.
    ahead = report("i-a", VrrpState.MASTER, seq=10**15, at=1.0)
    seen = replace(report("i-a", VrrpState.STOP, seq=5, at=2.0), source=OBSERVER)
    assert seen.newer_than(ahead), "the observer's later word counts"
    assert judge_report(contest(ahead), seen) is ReportVerdict.FRESH
    # ... and the agent's later word counts over the observer's, whatever the numbers.
    later_agent = report("i-a", VrrpState.MASTER, seq=1, at=3.0)
    assert judge_report(contest(seen), later_agent) is ReportVerdict.FRESH
    assert judge_report(contest(later_agent), seen) is ReportVerdict.STALE


def test_a_renewal_never_revives_a_claim_the_other_source_saw_end() -> None:
    # keepalived on i-a stops: the observer sees its priority-0 advert first; the agent's renewal,
    # sent just before keepalived stopped, reaches the gateway a few ms later.
    stopped = replace(report("i-a", VrrpState.STOP, seq=7, at=10.0), source=OBSERVER)
    late_renewal = report("i-a", VrrpState.MASTER, seq=41, at=10.004)
    assert judge_report(contest(stopped), late_renewal, renewal=True) is ReportVerdict.STALE
    assert elect(contest(stopped), t(10.004)) is None, "nobody owns it until someone claims it anew"
    # A claim that starts again is a state change, and it counts from either source.
    assert judge_report(contest(stopped), late_renewal) is ReportVerdict.FRESH
    # The observer's renewal of a claim the agent said ended (BACKUP after a preemption) is as late.
    backup = report("i-a", VrrpState.BACKUP, seq=42, at=20.0)
    still_seen = replace(report("i-a", VrrpState.MASTER, seq=8, at=20.1, lease=15.0), source=OBSERVER)
    assert judge_report(contest(backup), still_seen, renewal=True) is ReportVerdict.STALE


def test_a_renewal_revives_a_claim_that_only_went_quiet() -> None:
    # The observer's claim lapsed (its lease ran out); the agent still renews: keepalived is MASTER.
    lapsed = replace(report("i-a", VrrpState.MASTER, seq=7, at=0.0, lease=15.0), source=OBSERVER)
    renewal = report("i-a", VrrpState.MASTER, seq=41, at=16.0)
    assert judge_report(contest(lapsed), renewal, renewal=True) is ReportVerdict.FRESH
    # ... and one source's renewal after its own word is ordered by that source's numbers alone.
    own_stop = report("i-a", VrrpState.STOP, seq=40, at=15.0)
    assert judge_report(contest(own_stop), renewal, renewal=True) is ReportVerdict.FRESH


def test_an_instance_heard_by_both_sources_counts_once() -> None:
    both = contest(
        report("i-a", VrrpState.MASTER, priority=100, at=0.0),
        report("i-b", VrrpState.MASTER, priority=90, at=0.0),
        owner="i-a",
    )
    seen = replace(report("i-a", VrrpState.MASTER, priority=100, seq=7, at=0.5), source=OBSERVER)
    after = both.with_report(seen)
    assert len(after.reports) == 2
    assert elect(after, t(0.5)) == A
    assert explain(both, after, A, t(0.5)) is None, "the same claim heard twice changes no owner"


def test_the_history_says_who_saw_the_claim() -> None:
    seen = replace(report("i-a", VrrpState.MASTER, at=0.0), source=OBSERVER)
    change = explain(contest(), contest(seen), A, t(0))
    assert change is not None and "seen by the observer" in change.detail


def test_a_renewal_from_the_other_source_never_shortens_a_live_claim() -> None:
    seen = replace(report("i-a", VrrpState.MASTER, seq=9, at=0.0, lease=15.0), source=OBSERVER)
    agent = report("i-a", VrrpState.MASTER, seq=1, at=1.0, lease=2.5)
    kept = renewed(seen, agent)
    assert (kept.source, kept.seq, kept.expires_at) == (AGENT, 1, t(15.0))
    # From the same source, or once the claim lapsed, or at another priority, the report is stored as it is.
    assert renewed(report("i-a", VrrpState.MASTER, seq=0, at=0.0, lease=15.0), agent) == agent
    assert renewed(seen, report("i-a", VrrpState.MASTER, seq=1, at=20.0, lease=2.5)).expires_at == t(22.5)
    assert renewed(seen, report("i-a", VrrpState.MASTER, priority=50, seq=1, at=1.0, lease=2.5)).expires_at == t(3.5)


def test_a_lapse_or_a_state_from_the_other_source_is_never_taken_for_a_renewal() -> None:
    agent = report("i-a", VrrpState.MASTER, seq=1, at=0.0, lease=2.5)
    lapse = replace(report("i-a", VrrpState.MASTER, seq=9, at=1.0, lease=0.0), source=OBSERVER)
    assert renewed(agent, lapse) == lapse
    stop = replace(report("i-a", VrrpState.STOP, seq=9, at=1.0), source=OBSERVER)
    assert renewed(agent, stop) == stop
