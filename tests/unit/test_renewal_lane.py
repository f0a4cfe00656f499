"""Lease renewals carried apart from the log elect exactly what the reports one at a time would.

The gateway tells a renewal from a state change (`is_renewal`): renewals go to PostgreSQL,
newest per claim, and mapping applies them on its sweep (those that only extend a live claim,
most of them, stored without an election: `only_extends`), or with the next state change of
the same HAVIP (`in_arrival_order`); state changes go through `vrrp.events` at once. Below, two
worlds see the same reports from three instances of one HAVIP: one applies every report the
moment it arrives, the other carries them as the platform does. Lapses are found by the sweep
the mapping service runs every 200 ms, with any number of reports in between; after every
sweep both worlds have had the same owners in the same order and hold the same reports,
whatever the interleaving of claims, step-downs, renewals (in good time or late), lapses and
priorities. (A lapse may be acted on up to one sweep later in the second world: a renewal
that only extends a claim does not look for one, the sweep does.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import InstanceStatus, VrrpReported, VrrpState
from services.gateway.renewals import ClaimMemory, SeenReport, is_renewal, seen
from services.mapping.election import Candidate, Contest, elect, lapse_due, only_extends
from services.mapping.handlers import report_of
from services.mapping.report_batch import IncomingReport, LockedHavip, in_arrival_order, plan_reports

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INSTANCES = {"i-a": IPv4Address("10.0.0.11"), "i-b": IPv4Address("10.0.0.12"), "i-c": IPv4Address("10.0.0.13")}
CANDIDATES = tuple(Candidate(i, i, ip, InstanceStatus.RUNNING) for i, ip in sorted(INSTANCES.items()))


def reported(
    instance: str, state: VrrpState, priority: int, seq: int, at: datetime, lease: float | None
) -> VrrpReported:
    return VrrpReported(
        havip_id="h-1",
        tenant_id="t-1",
        instance_id=instance,
        state=state,
        priority=priority,
        seq=seq,
        reported_at=at,
        received_at=at,
        lease_seconds=lease if state is VrrpState.MASTER else None,
    )


# --- telling a renewal from a state change ---------------------------------------------------


def test_a_claim_repeated_while_live_at_the_same_priority_is_a_renewal() -> None:
    first = reported("i-a", VrrpState.MASTER, 100, 1, T0, 2.5)
    again = reported("i-a", VrrpState.MASTER, 100, 2, T0 + timedelta(seconds=1), 2.5)
    assert is_renewal(seen(first), again)


def test_anything_else_is_a_state_change() -> None:
    at = T0 + timedelta(seconds=1)
    claim = seen(reported("i-a", VrrpState.MASTER, 100, 1, T0, 2.5))
    assert not is_renewal(None, reported("i-a", VrrpState.MASTER, 100, 2, at, 2.5)), "the first claim seen"
    assert not is_renewal(claim, reported("i-a", VrrpState.MASTER, 110, 2, at, 2.5)), "a new priority"
    assert not is_renewal(claim, reported("i-a", VrrpState.BACKUP, 100, 2, at, None)), "a step-down"
    assert not is_renewal(claim, reported("i-a", VrrpState.MASTER, 100, 2, at, None)), "a claim without a lease"
    assert not is_renewal(claim, reported("i-a", VrrpState.MASTER, 100, 2, at, 0.0)), "a claim no longer live"
    late = T0 + timedelta(seconds=3)
    assert not is_renewal(claim, reported("i-a", VrrpState.MASTER, 100, 2, late, 2.5)), "after the lease ran out"
    replay = reported("i-a", VrrpState.MASTER, 100, 1, T0, 2.5)
    assert not is_renewal(claim, replay), "a replay"
    step_down = seen(reported("i-a", VrrpState.BACKUP, 100, 1, T0, None))
    assert not is_renewal(step_down, reported("i-a", VrrpState.MASTER, 100, 2, at, 2.5)), "a claim after BACKUP"


def test_a_replica_forgets_claims_it_has_not_heard_of_for_minutes() -> None:
    memory = ClaimMemory()
    memory.saw(reported("i-a", VrrpState.MASTER, 100, 1, T0, 2.5))
    memory.saw(reported("i-b", VrrpState.MASTER, 100, 1, T0 + timedelta(minutes=5), 2.5))
    assert len(memory) == 1


# --- the two worlds ---------------------------------------------------------------------------


@dataclass
class World:
    now: datetime = T0
    contest: Contest = field(default_factory=lambda: Contest(None, CANDIDATES, {}))
    # Every owner in turn: what the forwarder was told, so a flap shows even when it is undone.
    owners: list[str | None] = field(default_factory=list)

    def apply(self, incoming: list[IncomingReport]) -> None:
        locked = LockedHavip("h-1", "t-1", version=1, published_version=1, contest=self.contest)
        plan = plan_reports({"h-1": locked}, incoming)
        self.owners += [outcome.owner.target_id if outcome.owner else None for outcome in plan.outcomes]
        self.contest = plan.contests["h-1"]

    def sweep_lapses(self) -> None:
        if lapse_due(self.contest, self.now):
            owner = elect(self.contest, self.now)
            self.owners.append(owner.target_id if owner else None)
            self.contest = replace(self.contest, owner_target_id=owner.target_id if owner else None)


@dataclass
class OneAtATime(World):
    """Every report applied the moment it arrives."""

    def arrive(self, report: VrrpReported) -> None:
        self.apply([_incoming(report)])

    def sweep(self) -> None:
        self.sweep_lapses()


@dataclass
class AsCarried(World):
    """Renewals to the table (newest per claim), state changes to the log; mapping as it runs."""

    memory: ClaimMemory = field(default_factory=ClaimMemory)
    renewals: dict[str, IncomingReport] = field(default_factory=dict)

    def arrive(self, report: VrrpReported) -> None:
        if self.memory.is_renewal(report):
            held = self.renewals.get(report.instance_id)
            if held is None or held.report.seq < report.seq:  # the table's upsert keeps the newest
                self.renewals[report.instance_id] = _incoming(report)
        else:  # on the log; mapping applies it with the renewals of its HAVIP, where they arrived
            self.apply(in_arrival_order([_incoming(report)], self._take()))
        self.memory.saw(report)

    def sweep(self) -> None:
        # As apply_renewals: a renewal that only extends a live claim is stored without an election,
        # the others go through it in the order they arrived; then the lease sweep.
        rest = []
        for item in self._take():
            if only_extends(self.contest.reports.get(item.report.instance_id), item.report):
                self.contest = self.contest.with_report(item.report)
            else:
                rest.append(item)
        if rest:
            self.apply(sorted(rest, key=lambda item: item.report.received_at))
        self.sweep_lapses()

    def _take(self) -> list[IncomingReport]:
        taken, self.renewals = list(self.renewals.values()), {}
        return taken


def _incoming(report: VrrpReported) -> IncomingReport:
    return IncomingReport(report.havip_id, report.tenant_id, report.message_id, report_of(report))


instance_ids = st.sampled_from(sorted(INSTANCES))
advances = st.integers(min_value=0, max_value=1200).map(lambda ms: timedelta(milliseconds=ms))
steps = st.one_of(
    st.tuples(
        st.just("report"),
        instance_ids,
        st.sampled_from([VrrpState.MASTER, VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT]),
        st.sampled_from([90, 100, 110]),
        st.sampled_from([None, 2.5, 1.0, 1.0]),
        advances,
    ),
    # The agent repeats its claim while keepalived holds MASTER: most often in good time, now and then late.
    st.tuples(st.just("renew"), instance_ids, advances),
    st.tuples(st.just("wait"), advances),
)


# The mapping service looks for lapsed leases (and takes waiting renewals) this often.
SWEEP_EVERY = timedelta(milliseconds=200)


@settings(max_examples=500, deadline=None)
@given(st.lists(steps, max_size=80))
def test_renewals_carried_apart_elect_what_one_report_at_a_time_would(script: list[tuple[object, ...]]) -> None:
    direct, carried = OneAtATime(), AsCarried()
    seqs: dict[str, int] = {}
    last: dict[str, SeenReport] = {}
    next_sweep = T0 + SWEEP_EVERY
    for step in script:
        advance = step[-1]
        assert isinstance(advance, timedelta)
        arrives = direct.now + advance
        while next_sweep <= arrives:  # the sweeps due meanwhile, in both worlds at once
            direct.now = carried.now = next_sweep
            _sweep_and_compare(direct, carried)
            next_sweep += SWEEP_EVERY
        direct.now = carried.now = arrives
        report = None
        if step[0] == "report":
            _, instance, state, priority, lease, _ = step
            report = (str(instance), state, priority, lease)
        elif step[0] == "renew":
            instance = str(step[1])
            previous = last.get(instance)
            if previous is not None and previous.state is VrrpState.MASTER and previous.live_until is not None:
                report = (instance, VrrpState.MASTER, previous.priority, 2.5)
        if report is not None:
            instance, state, priority, lease = report
            seqs[instance] = seqs.get(instance, 0) + 1
            message = reported(instance, state, priority, seqs[instance], direct.now, lease)  # type: ignore[arg-type]  # drawn steps: loosely typed tuples
            last[instance] = seen(message)
            direct.arrive(message)
            carried.arrive(message)
    direct.now = carried.now = next_sweep
    _sweep_and_compare(direct, carried)


def _sweep_and_compare(direct: OneAtATime, carried: AsCarried) -> None:
    direct.sweep()
    carried.sweep()
    assert carried.owners == direct.owners
    assert carried.contest == direct.contest


def test_a_renewal_that_arrived_before_a_state_change_is_applied_before_it() -> None:
    renewal = _incoming(reported("i-a", VrrpState.MASTER, 100, 2, T0 + timedelta(seconds=1), 2.5))
    change = _incoming(reported("i-b", VrrpState.MASTER, 90, 1, T0 + timedelta(seconds=2), 2.5))
    later = _incoming(reported("i-c", VrrpState.MASTER, 90, 1, T0 + timedelta(seconds=3), 2.5))
    assert in_arrival_order([change], [later, renewal]) == [renewal, change, later]


def test_a_late_renewal_waiting_in_the_table_is_applied_before_a_later_claim_of_another_instance() -> None:
    # i-a renews just before its lease ends; i-b claims just after that end, before the next sweep.
    # Had the claim been judged without the waiting renewal, traffic would go to i-b and back.
    direct, carried = OneAtATime(), AsCarried()
    script = [
        reported("i-a", VrrpState.MASTER, 110, 1, T0, 1.0),
        reported("i-a", VrrpState.MASTER, 110, 2, T0 + timedelta(milliseconds=950), 2.5),
        reported("i-b", VrrpState.MASTER, 100, 1, T0 + timedelta(milliseconds=1050), 2.5),
    ]
    for message in script:
        direct.now = carried.now = message.received_at
        direct.arrive(message)
        carried.arrive(message)
    _sweep_and_compare(direct, carried)
    assert carried.owners == ["i-a"]


def test_a_renewal_only_extends_a_live_claim_at_the_same_priority() -> None:
    stored = report_of(reported("i-a", VrrpState.MASTER, 100, 1, T0, 2.5))
    at = T0 + timedelta(seconds=1)
    assert only_extends(stored, report_of(reported("i-a", VrrpState.MASTER, 100, 2, at, 2.5)))
    assert not only_extends(None, report_of(reported("i-a", VrrpState.MASTER, 100, 2, at, 2.5)))
    assert not only_extends(stored, report_of(reported("i-a", VrrpState.MASTER, 110, 2, at, 2.5))), "priority"
    late = T0 + timedelta(seconds=3)
    assert not only_extends(stored, report_of(reported("i-a", VrrpState.MASTER, 100, 2, late, 2.5))), "lapsed"
    assert not only_extends(stored, report_of(reported("i-a", VrrpState.MASTER, 100, 1, T0, 2.5))), "a replay"
    notify = report_of(reported("i-a", VrrpState.MASTER, 100, 1, T0, None))
    assert not only_extends(notify, report_of(reported("i-a", VrrpState.MASTER, 100, 2, at, 2.5))), "no lease"
