"""Owner election follows keepalived: DESIGN.md's owner rules, one test each."""

from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

from schemas.messages import VrrpState
from services.mapping.election import (
    Candidate,
    HaVipView,
    OwnerCause,
    Report,
    ReportVerdict,
    elect,
    explain,
    judge_report,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = timedelta(seconds=2)
A = Candidate("i-a", "i-a", IPv4Address("10.0.0.11"), "Running")
B = Candidate("i-b", "i-b", IPv4Address("10.0.0.12"), "Running")
C = Candidate("i-c", "i-c", IPv4Address("10.0.0.13"), "Running")


def report(instance: str, state: VrrpState, *, priority: int = 100, seq: int = 1, at: float = 0.0) -> Report:
    when = T0 + timedelta(seconds=at)
    return Report(instance, state, priority, seq, reported_at=when, received_at=when)


def view(*reports: Report, owner: str | None = None, candidates: tuple[Candidate, ...] = (A, B, C)) -> HaVipView:
    return HaVipView(owner_target_id=owner, candidates=candidates, reports={r.instance_id: r for r in reports})


def test_an_instance_reporting_master_becomes_owner() -> None:
    assert elect(view(report("i-a", VrrpState.MASTER)), WINDOW) == A


def test_no_master_means_no_owner() -> None:
    assert elect(view(report("i-a", VrrpState.BACKUP), report("i-b", VrrpState.FAULT)), WINDOW) is None


def test_split_brain_goes_to_the_higher_priority() -> None:
    both = view(
        report("i-a", VrrpState.MASTER, priority=100, at=0.0), report("i-b", VrrpState.MASTER, priority=150, at=0.5)
    )
    assert elect(both, WINDOW) == B
    reversed_order = view(
        report("i-b", VrrpState.MASTER, priority=150, at=0.0), report("i-a", VrrpState.MASTER, priority=100, at=0.5)
    )
    assert elect(reversed_order, WINDOW) == B


def test_split_brain_with_equal_priority_goes_to_the_higher_primary_ip() -> None:
    both = view(
        report("i-b", VrrpState.MASTER, priority=100, at=0.0), report("i-a", VrrpState.MASTER, priority=100, at=0.1)
    )
    assert elect(both, WINDOW) == B  # 10.0.0.12 > 10.0.0.11, RFC 5798 §6.4.3


def test_a_later_master_claim_is_a_failover_even_with_lower_priority() -> None:
    # The old master died without a word; keepalived promoted the backup.
    failover = view(
        report("i-a", VrrpState.MASTER, priority=150, at=0.0), report("i-b", VrrpState.MASTER, priority=100, at=10.0)
    )
    assert elect(failover, WINDOW) == B


def test_owner_reporting_backup_hands_over_to_another_master() -> None:
    after = view(report("i-a", VrrpState.BACKUP, seq=2, at=5.0), report("i-b", VrrpState.MASTER, at=4.0), owner="i-a")
    assert elect(after, WINDOW) == B


def test_stopped_or_detached_instances_cannot_own() -> None:
    stopped_a = Candidate("i-a", "i-a", IPv4Address("10.0.0.11"), "Stopped")
    reports = (report("i-a", VrrpState.MASTER, at=1.0), report("i-b", VrrpState.MASTER, at=0.0))
    assert elect(view(*reports, candidates=(stopped_a, B)), WINDOW) == B
    assert elect(view(*reports, candidates=(B,)), WINDOW) == B
    assert elect(view(report("i-a", VrrpState.MASTER), candidates=(B,)), WINDOW) is None


def test_reports_from_unattached_instances_are_refused() -> None:
    assert judge_report(view(candidates=(A,)), report("i-z", VrrpState.MASTER)) is ReportVerdict.NOT_ATTACHED


def test_older_reports_and_replays_change_nothing() -> None:
    current = view(report("i-a", VrrpState.MASTER, seq=5, at=5.0))
    assert judge_report(current, report("i-a", VrrpState.BACKUP, seq=4, at=9.0)) is ReportVerdict.STALE
    assert judge_report(current, report("i-a", VrrpState.MASTER, seq=5, at=5.0)) is ReportVerdict.STALE
    assert judge_report(current, report("i-a", VrrpState.BACKUP, seq=6, at=6.0)) is ReportVerdict.FRESH
    # Same sequence number, later agent clock: the clock breaks the tie.
    assert judge_report(current, report("i-a", VrrpState.BACKUP, seq=5, at=5.5)) is ReportVerdict.FRESH


def test_every_owner_change_says_why() -> None:
    empty = view()
    a_master = view(report("i-a", VrrpState.MASTER, at=0.0))
    change = explain(empty, a_master, A, WINDOW)
    assert change is not None and change.cause is OwnerCause.MASTER_REPORTED and change.owner == A

    owned = view(report("i-a", VrrpState.MASTER, at=0.0), owner="i-a")
    released = view(report("i-a", VrrpState.FAULT, seq=2, at=1.0), owner="i-a")
    change = explain(owned, released, None, WINDOW)
    assert change is not None and change.cause is OwnerCause.OWNER_RELEASED and "FAULT" in change.detail

    detached = view(report("i-a", VrrpState.MASTER), owner="i-a", candidates=(B, C))
    change = explain(owned, detached, None, WINDOW)
    assert change is not None and change.cause is OwnerCause.OWNER_DETACHED

    split = view(
        report("i-a", VrrpState.MASTER, priority=100, at=0.0),
        report("i-b", VrrpState.MASTER, priority=200, at=0.3),
        owner="i-a",
    )
    change = explain(owned, split, B, WINDOW)
    assert change is not None and change.cause is OwnerCause.SPLIT_BRAIN_RESOLVED

    takeover_before = view(
        report("i-a", VrrpState.MASTER, at=0.0), report("i-b", VrrpState.MASTER, at=0.1, priority=50), owner="i-a"
    )
    takeover_after = view(
        report("i-a", VrrpState.BACKUP, seq=2, at=3.0),
        report("i-b", VrrpState.MASTER, at=0.1, priority=50),
        owner="i-a",
    )
    change = explain(takeover_before, takeover_after, B, WINDOW)
    assert change is not None and change.cause is OwnerCause.TAKEOVER


def test_no_change_no_history() -> None:
    owned = view(report("i-a", VrrpState.MASTER), owner="i-a")
    assert explain(owned, owned, A, WINDOW) is None
