"""A batch of VRRP reports decides exactly as its reports would one at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ErrorCode
from schemas.messages import HaVipStatus, InstanceStatus, ReportSource, VrrpState
from services.mapping.election import Candidate, Contest, OwnerCause, ReportVerdict, TriggerKind, VrrpReport
from services.mapping.report_batch import IncomingReport, LockedHavip, ReportPlan, plan_reports

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A = Candidate("i-a", "i-a", IPv4Address("10.0.0.11"), InstanceStatus.RUNNING)
B = Candidate("i-b", "i-b", IPv4Address("10.0.0.12"), InstanceStatus.RUNNING)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def report(instance: str, state: VrrpState, seq: int, at: float, priority: int = 100, lease: float = 2.5) -> VrrpReport:
    expires = t(at + lease) if state is VrrpState.MASTER else None
    return VrrpReport(instance, state, priority, seq, reported_at=t(at), received_at=t(at), expires_at=expires)


def havip(
    havip_id: str = "h-1", *reports: VrrpReport, owner: str | None = None, version: int = 3, published: int = 3
) -> LockedHavip:
    contest = Contest(owner, (A, B), {r.instance_id: r for r in reports})
    return LockedHavip(havip_id, "t-1", version=version, published_version=published, contest=contest)


def incoming(report_: VrrpReport, havip_id: str = "h-1", tenant: str = "t-1") -> IncomingReport:
    return IncomingReport(havip_id, tenant, f"m-{report_.instance_id}-{report_.seq}", report_)


def plan(locked: list[LockedHavip], reports: list[IncomingReport]) -> ReportPlan:
    return plan_reports({h.havip_id: h for h in locked}, reports)


def test_renewals_of_the_owners_live_claim_store_the_last_report_and_publish_nothing() -> None:
    owned = havip("h-1", report("i-a", VrrpState.MASTER, 1, 0.0), owner="i-a")
    renewals = [incoming(report("i-a", VrrpState.MASTER, seq, seq * 1.0)) for seq in (2, 3, 4)]
    result = plan([owned], renewals)
    assert result.reports == {("h-1", "i-a"): renewals[-1].report}
    assert not result.outcomes and not result.havips and not result.publish and not result.refusals
    assert result.verdicts == {ReportVerdict.FRESH: 3}


def test_a_renewal_arriving_after_the_owners_lease_ran_out_moves_the_owner() -> None:
    both = havip(
        "h-1",
        report("i-a", VrrpState.MASTER, 1, 0.0),
        report("i-b", VrrpState.MASTER, 1, 0.0, priority=90),
        owner="i-a",
    )
    # i-a's claim ran out at 2.5 s; i-b renews at 2.6 s: the renewal takes the full path and wins.
    result = plan([both], [incoming(report("i-b", VrrpState.MASTER, 2, 2.6, priority=90))])
    assert [(o.version, o.owner, o.change.cause) for o in result.outcomes] == [(4, B, OwnerCause.OWNER_CLAIM_LAPSED)]
    assert result.havips["h-1"].owner_target_id == "i-b" and result.havips["h-1"].status is HaVipStatus.IN_USE
    assert result.publish == {"h-1"} and result.caused_at == {"h-1": t(2.6)}
    trigger = result.outcomes[0].trigger
    assert trigger.kind is TriggerKind.VRRP_REPORT and trigger.instance_id == "i-b" and trigger.seq == 2


def test_a_late_renewal_of_a_stopped_master_does_not_take_the_havip_back() -> None:
    # The lab's history once read n1, nobody, n1, nobody, n2: the observer saw n1's priority-0
    # advert (nobody owns it), then n1's agent renewal, sent just before keepalived stopped,
    # arrived and made n1 owner again until the agent's own STOP; then n2 claimed.
    owned = havip("h-1", report("i-a", VrrpState.MASTER, 40, 0.0), owner="i-a")
    seen_stop = replace(report("i-a", VrrpState.STOP, 7, 1.0), source=ReportSource.OBSERVER)
    late_renewal = replace(incoming(report("i-a", VrrpState.MASTER, 41, 1.004)), renewal=True)
    agent_stop = incoming(report("i-a", VrrpState.STOP, 42, 1.2))
    claim = incoming(report("i-b", VrrpState.MASTER, 1, 3.0, priority=90))
    result = plan([owned], [incoming(seen_stop), late_renewal, agent_stop, claim])
    assert [(o.owner, o.change.cause) for o in result.outcomes] == [
        (None, OwnerCause.OWNER_RELEASED),
        (B, OwnerCause.MASTER_REPORTED),
    ]
    assert result.verdicts == {ReportVerdict.FRESH: 3, ReportVerdict.STALE: 1}


def test_every_change_in_a_batch_gets_its_own_version_in_order() -> None:
    owned = havip("h-1", report("i-a", VrrpState.MASTER, 1, 0.0), owner="i-a", version=7, published=7)
    result = plan(
        [owned],
        [
            incoming(report("i-a", VrrpState.BACKUP, 2, 1.0)),  # released
            incoming(report("i-b", VrrpState.MASTER, 1, 1.1)),  # taken
            incoming(report("i-a", VrrpState.MASTER, 3, 1.2, priority=150)),  # preempted
        ],
    )
    assert [(o.version, o.change.cause) for o in result.outcomes] == [
        (8, OwnerCause.OWNER_RELEASED),
        (9, OwnerCause.MASTER_REPORTED),
        (10, OwnerCause.HIGHER_PRIORITY_CLAIM),
    ]
    assert result.havips["h-1"].version == 10 and result.havips["h-1"].owner_target_id == "i-a"
    assert result.caused_at["h-1"] == t(1.2)


def test_reports_that_cannot_count_are_refused_by_index_and_the_rest_apply() -> None:
    result = plan(
        [havip("h-1"), havip("h-2")],
        [
            incoming(report("i-a", VrrpState.MASTER, 1, 0.0), havip_id="h-9"),
            incoming(report("i-a", VrrpState.MASTER, 1, 0.0), havip_id="h-2", tenant="t-other"),
            incoming(report("i-z", VrrpState.MASTER, 1, 0.0)),
            incoming(report("i-b", VrrpState.MASTER, 1, 0.0), havip_id="h-2"),
        ],
    )
    assert [(r.index, r.code) for r in result.refusals] == [
        (0, ErrorCode.UNKNOWN_HAVIP),
        (1, ErrorCode.UNKNOWN_HAVIP),
        (2, ErrorCode.REPORTER_NOT_ATTACHED),
    ]
    # The unattached reporter's place in the sequence is kept, without a claim.
    kept = result.reports[("h-1", "i-z")]
    assert kept.seq == 1 and kept.state is VrrpState.STOP and kept.expires_at is None
    assert result.havips["h-2"].owner_target_id == "i-b" and result.publish == {"h-2"}


def test_a_redelivered_report_publishes_only_what_was_committed_and_never_published() -> None:
    seen = report("i-a", VrrpState.MASTER, 1, 0.0)
    published = plan([havip("h-1", seen, owner="i-a", version=4, published=4)], [incoming(seen)])
    assert published.verdicts == {ReportVerdict.STALE: 1} and not published.publish
    lost = plan([havip("h-1", seen, owner="i-a", version=4, published=3)], [incoming(seen)])
    assert lost.publish == {"h-1"} and not lost.outcomes and not lost.reports


# --- a batch against the same reports one at a time ------------------------------------------

steps = st.lists(
    st.tuples(
        st.sampled_from(["h-1", "h-2"]),
        st.sampled_from(["i-a", "i-b", "i-z"]),
        st.sampled_from(list(VrrpState)),
        st.sampled_from([90, 100]),
        st.integers(min_value=1, max_value=6),
        st.floats(min_value=0, max_value=3, allow_nan=False),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_a_batch_decides_as_its_reports_would_one_at_a_time(
    batch: list[tuple[str, str, VrrpState, int, int, float]],
) -> None:
    reports = []
    clock = 0.0
    for havip_id, instance, state, priority, seq, advance in batch:
        clock += advance
        reports.append(incoming(report(instance, state, seq, clock, priority), havip_id=havip_id))
    start = {"h-1": havip("h-1"), "h-2": havip("h-2")}

    together = plan_reports(start, reports)

    locked = dict(start)
    outcomes, refusals, published = [], [], set()
    for index, item in enumerate(reports):
        one = plan_reports(locked, [item])
        outcomes += one.outcomes
        refusals += [(index, r.code) for r in one.refusals]
        published |= one.publish
        before = locked.get(item.havip_id)
        if before is not None:
            version = one.havips[item.havip_id].version if item.havip_id in one.havips else before.version
            locked[item.havip_id] = LockedHavip(
                before.havip_id, before.tenant_id, version, version, one.contests[item.havip_id]
            )

    assert together.outcomes == outcomes
    assert [(r.index, r.code) for r in together.refusals] == refusals
    assert together.publish == published
    assert together.contests == {h: locked[h].contest for h in start}
    for (havip_id, instance), stored in together.reports.items():
        assert locked[havip_id].contest.reports[instance] == stored
