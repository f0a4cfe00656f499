"""Random interleavings of reports, renewals, expiries, attaches, detaches, status changes,
duplicates and redeliveries, driven through the election code the mapping service uses.

The driver below takes each report through `plan_reports`, as the mapping handlers do
(a batch of one here; tests/unit/test_report_batch.py shows a batch decides as its
reports would one at a time), deduplicates
commands and inventory changes the way the tables do, and runs the lease sweep
after every step (the service sweeps every 200 ms). After every step:
- the owner is attached, running, and its latest state is MASTER;
- when any live claim exists, the owner holds the live claim with the highest
  (priority, primary IP);
and at the end, redelivering any prefix of the messages changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import InstanceStatus, VrrpState
from services.mapping.election import (
    Candidate,
    Contest,
    VrrpReport,
    elect,
    lapse_due,
    rank,
)
from services.mapping.report_batch import IncomingReport, LockedHavip, plan_reports

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INSTANCES = {"i-a": IPv4Address("10.0.0.11"), "i-b": IPv4Address("10.0.0.12"), "i-c": IPv4Address("10.0.0.13")}


@dataclass(frozen=True)
class Attach:
    command_id: int
    instance: str


@dataclass(frozen=True)
class Detach:
    command_id: int
    instance: str


@dataclass(frozen=True)
class StatusChanged:
    revision: int
    instance: str
    status: InstanceStatus


Message = VrrpReport | Attach | Detach | StatusChanged


@dataclass
class World:
    """The mapping tables for one HAVIP, plus what the dedup tables remember."""

    now: datetime = T0
    contest: Contest = field(default_factory=lambda: Contest(None, (), {}))
    applied_commands: set[int] = field(default_factory=set)
    revisions: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, InstanceStatus] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    delivered: list[Message] = field(default_factory=list)

    def handle(self, message: Message) -> None:
        if isinstance(message, VrrpReport):
            self._report(message)
        elif isinstance(message, Attach | Detach):
            if message.command_id in self.applied_commands:
                return
            self.applied_commands.add(message.command_id)
            self._membership(message)
        elif message.revision > self.revisions.get(message.instance, 0):
            self.revisions[message.instance] = message.revision
            self.statuses[message.instance] = message.status
            candidates = tuple(
                replace(c, instance_status=message.status) if c.instance_id == message.instance else c
                for c in self.contest.candidates
            )
            self._elect(replace(self.contest, candidates=candidates), self.now)

    def _report(self, report: VrrpReport) -> None:
        locked = LockedHavip("h-1", "t-1", version=1, published_version=1, contest=self.contest)
        plan = plan_reports({"h-1": locked}, [IncomingReport("h-1", "t-1", "m-1", report)])
        self.contest = plan.contests["h-1"]

    def _membership(self, command: Attach | Detach) -> None:
        others = tuple(c for c in self.contest.candidates if c.instance_id != command.instance)
        reports = dict(self.contest.reports)
        if isinstance(command, Attach):
            status = self.statuses.get(command.instance, InstanceStatus.RUNNING)
            joined = Candidate(command.instance, command.instance, INSTANCES[command.instance], status)
            candidates = tuple(sorted((*others, joined), key=lambda c: c.target_id))
        else:
            candidates = others
            if command.instance in reports:  # the claim is withdrawn, the sequence kept
                reports[command.instance] = replace(reports[command.instance], state=VrrpState.STOP, expires_at=None)
        self._elect(Contest(self.contest.owner_target_id, candidates, reports), self.now)

    def _elect(self, after: Contest, at: datetime) -> None:
        owner = elect(after, at)
        self.contest = replace(after, owner_target_id=owner.target_id if owner else None)

    def sweep(self) -> None:
        if lapse_due(self.contest, self.now):
            self._elect(self.contest, self.now)

    def snapshot(self) -> tuple[object, ...]:
        return (self.contest, frozenset(self.applied_commands), tuple(sorted(self.revisions.items())))


# --- what can happen ----------------------------------------------------------------------------

instance_ids = st.sampled_from(sorted(INSTANCES))
leases = st.sampled_from([None, 0.0, 1.0, 2.5])
advances = st.floats(min_value=0, max_value=3, allow_nan=False).map(lambda s: timedelta(seconds=round(s, 3)))
steps = st.one_of(
    st.tuples(
        st.just("report"),
        instance_ids,
        st.sampled_from(list(VrrpState)),
        st.sampled_from([90, 100, 110]),
        leases,
        advances,
    ),
    st.tuples(st.just("renew"), instance_ids, advances),
    st.tuples(st.just("tick"), advances),
    st.tuples(st.just("attach"), instance_ids),
    st.tuples(st.just("detach"), instance_ids),
    st.tuples(st.just("status"), instance_ids, st.sampled_from([InstanceStatus.RUNNING, InstanceStatus.STOPPED])),
    st.tuples(st.just("duplicate"), st.integers(min_value=0)),
)


def play(world: World, step: tuple[object, ...], counter: list[int]) -> None:
    # A step is a tuple hypothesis drew (kind first): its items are typed by kind, which mypy
    # cannot follow, hence the ignores below.
    kind = step[0]
    counter[0] += 1
    message: Message | None = None
    if kind == "report":
        _, instance, state, priority, lease, advance = step
        world.now += advance  # type: ignore[operator]
        message = _new_report(world, str(instance), state, priority, lease)  # type: ignore[arg-type]
    elif kind == "renew":
        _, instance, advance = step
        world.now += advance  # type: ignore[operator]
        last = world.contest.reports.get(str(instance))
        if last is not None and last.state is VrrpState.MASTER and last.expires_at is not None:
            message = _new_report(world, str(instance), VrrpState.MASTER, last.priority, 2.5)
    elif kind == "tick":
        world.now += step[1]  # type: ignore[operator]
    elif kind == "attach":
        message = Attach(counter[0], str(step[1]))
    elif kind == "detach":
        message = Detach(counter[0], str(step[1]))
    elif kind == "status":
        message = StatusChanged(counter[0], str(step[1]), step[2])  # type: ignore[arg-type]
    elif world.delivered:  # a duplicate of something already delivered
        message = world.delivered[int(step[1]) % len(world.delivered)]  # type: ignore[call-overload]
    if message is not None:
        world.delivered.append(message)
        world.handle(message)
    world.sweep()


def _new_report(world: World, instance: str, state: VrrpState, priority: int, lease: float | None) -> VrrpReport:
    seq = world.seqs.get(instance, 0) + 1
    world.seqs[instance] = seq
    expires = None if lease is None or state is not VrrpState.MASTER else world.now + timedelta(seconds=lease)
    return VrrpReport(instance, state, priority, seq, reported_at=world.now, received_at=world.now, expires_at=expires)


def check_invariants(world: World) -> None:
    contest, now = world.contest, world.now
    owner = contest.candidate(contest.owner_target_id)
    if contest.owner_target_id is not None:
        assert owner is not None, "the owner is attached"
        assert owner.eligible, "the owner is running"
        assert contest.reports[owner.instance_id].state is VrrpState.MASTER, "the owner's latest state is MASTER"
    live = [c for c in contest.candidates if contest.live_claim(c, now)]
    if live:
        best = max(live, key=lambda c: rank(c, contest.reports[c.instance_id]))
        assert owner == best, f"live claims {live} but the owner is {owner}"


@settings(max_examples=400, deadline=None)
@given(st.lists(steps, max_size=60), st.integers(min_value=0, max_value=60))
def test_the_owner_always_follows_the_rules_and_redelivery_changes_nothing(
    script: list[tuple[object, ...]], prefix: int
) -> None:
    world, counter = World(), [0]
    for step in script:
        play(world, step, counter)
        check_invariants(world)
    before = world.snapshot()
    for message in list(world.delivered[:prefix]):
        world.handle(message)
    assert world.snapshot() == before, "redelivering a prefix changed the state"


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, max_size=40))
def test_the_same_input_gives_the_same_owner(script: list[tuple[object, ...]]) -> None:
    first, second = World(), World()
    for step in script:
        play(first, step, [0])
    for step in script:
        play(second, step, [0])
    assert first.snapshot() == second.snapshot()
