"""What the mapping service does with each message: parse → decide (pure) → persist → publish.

A HAVIP's full state is published whenever it changed, and the version on
`havip.mappings` is recorded (`published_version`). If the worker died
between its database commit and its publish, the redelivered message finds
the HAVIP committed but unpublished and publishes it, and the sweep
publishes whatever else is left so (a lease expiry has no message to
redeliver). Forwarders apply a state only if its version is newer, so
repeats are free.

VRRP reports come in batches (see report_batch.py): a bounded number of
statements per batch, however many reports it holds. Lease renewals (every
live master renews every second) do not come through Kafka: gateways leave
the newest one of each claim in `claim_renewals`, and `apply_renewals` takes
them in batches, on the sweep's timer, through the same plan. A renewal that
changes nothing (the common case) is one row of the batch's upsert and
publishes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
from prometheus_client import Counter as MetricCounter

from schemas import topics
from schemas.errors import ErrorCode, HaVipError
from schemas.messages import (
    CommandRejected,
    CommandSucceeded,
    EniChanged,
    HaVipMappingChanged,
    InstanceChanged,
    ObservedClaimsRenewed,
    ReportSource,
    VrrpReported,
    VrrpState,
    utcnow,
)
from services.mapping import store
from services.mapping.commands import COMMAND_TYPE, AcceptedCommand, Reelect, apply_accepted
from services.mapping.election import (
    Contest,
    Report,
    Trigger,
    TriggerKind,
    elect,
    explain,
    lapse_due,
    only_extends,
)
from services.mapping.report_batch import (
    IncomingReport,
    LockedHavip,
    Refusal,
    ReportPlan,
    in_arrival_order,
    plan_reports,
)
from services.readmodel.mappings import load_mappings
from services.runtime.inventory import InventoryChange, record_inventory

log = logging.getLogger(__name__)

OWNER_CHANGES = MetricCounter("havip_owner_changes_total", "Owner changes", ["cause"])
REPORTS = MetricCounter("havip_vrrp_reports_total", "VRRP reports by verdict", ["verdict"])
RENEWALS_APPLIED = MetricCounter(
    "havip_mapping_renewals_applied_total", "Lease renewals taken from claim_renewals and applied", ["with"]
)
RENEWALS_EXTENDED = MetricCounter(
    "havip_mapping_renewals_extended_total", "Renewals that only extended a live claim, stored without an election"
)

UNPUBLISHED_READ = 1000
# Renewals applied per transaction: a state change for one of their HAVIPs waits for at most
# one such transaction's row locks, never for a backlog.
RENEWALS_PER_TRANSACTION = 500
# Rows of claims that stopped renewing are dropped this long after their last renewal.
FORGET_RENEWALS_AFTER = timedelta(minutes=10)
# Owner changes of one batch logged a line each; more are summed up in one line.
OWNER_CHANGES_LOGGED_EACH = 10

# Produces (key, value) records to a topic and returns once the broker has them all.
Publish = Callable[[topics.Topic, Sequence[tuple[str, bytes]]], Awaitable[None]]
# Keeps a renewal that cannot count where an operator sees it (the dead letters), with the reason.
RefuseRenewal = Callable[[IncomingReport, Refusal], Awaitable[None]]


def report_of(reported: VrrpReported) -> Report:
    lease = reported.lease_seconds
    return Report(
        instance_id=reported.instance_id,
        state=reported.state,
        priority=reported.priority,
        seq=reported.seq,
        reported_at=reported.reported_at,
        received_at=reported.received_at,
        expires_at=None if lease is None else reported.received_at + timedelta(seconds=lease),
        source=reported.source,
    )


class OwnerTracker:
    """Applies accepted commands, VRRP reports, lease expiries and inventory changes to the mapping tables."""

    def __init__(self, pool: asyncpg.Pool, publish: Publish, refuse_renewal: RefuseRenewal) -> None:
        self._pool = pool
        self._publish = publish
        self._refuse_renewal = refuse_renewal
        self._renewals_forgotten_at = 0.0

    async def on_accepted(self, command: AcceptedCommand) -> None:
        refusal: tuple[str, str] | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            earlier = await conn.fetchrow(
                "SELECT rejected_code, rejected_reason FROM applied_commands WHERE command_id = $1", command.command_id
            )
            if earlier is None:
                try:
                    async with conn.transaction():  # a savepoint: a refusal undoes only the command's own changes
                        await apply_accepted(conn, command, self._reelect_for_command(command))
                except HaVipError as exc:
                    refusal = (exc.code, exc.message)
                    log.warning("command refused command=%s code=%s %s", command.command_id, exc.code, exc.message)
                except asyncpg.DataError as exc:
                    # Data the tables cannot hold will never apply: answer it (so quota releases its
                    # reservation and the operation ends) rather than leave it Pending forever.
                    refusal = (ErrorCode.APPLY_FAILED, f"the mapping tables cannot hold this command: {exc}")
                    log.error("command unappliable command=%s error=%r", command.command_id, exc)
                await conn.execute(
                    "INSERT INTO applied_commands (command_id, havip_id, rejected_code, rejected_reason)"
                    " VALUES ($1, $2, $3, $4)",
                    command.command_id,
                    command.havip_id,
                    *(refusal or (None, None)),
                )
            elif earlier["rejected_code"] is not None:
                refusal = (earlier["rejected_code"], earlier["rejected_reason"])
        await self.publish_states([command.havip_id])
        outcome = {
            "command_id": command.command_id,
            "tenant_id": command.tenant_id,
            "havip_id": command.havip_id,
            "command_type": COMMAND_TYPE[type(command)],
            "stage": "mapping",
        }
        result: CommandSucceeded | CommandRejected = (
            CommandSucceeded(**outcome)
            if refusal is None
            else CommandRejected(**outcome, code=refusal[0], reason=refusal[1])
        )
        await self._publish(topics.RESULTS, [(command.command_id, topics.encode(result))])

    def _reelect_for_command(self, command: AcceptedCommand) -> Reelect:
        async def reelect(conn: asyncpg.Connection, havip_id: str, before: Contest) -> bool:
            trigger = Trigger(TriggerKind.COMMAND, message_id=command.command_id)
            return await self._reelect(conn, havip_id, before, utcnow(), trigger)

        return reelect

    async def on_reports(self, batch: Sequence[VrrpReported]) -> list[Refusal]:
        """Apply reports in the order given, in one transaction; the ones that cannot count (by index).

        The renewals gateways left for the same HAVIPs are applied with them, each where it
        arrived (`in_arrival_order`): a state change is judged against claims as renewed by
        then, and waits for no other HAVIP's renewals.
        """
        incoming = [IncomingReport(r.havip_id, r.tenant_id, r.message_id, report_of(r)) for r in batch]
        async with self._pool.acquire() as conn, conn.transaction():
            renewals = await store.take_renewals(conn, len(incoming), {item.havip_id for item in incoming})
            merged = in_arrival_order(incoming, renewals) if renewals else incoming
            plan, states = await self._apply_reports(conn, merged)
        RENEWALS_APPLIED.labels("state-changes").inc(len(renewals))
        self._count(plan)
        await self._publish_states(states)
        if not renewals:
            return plan.refusals
        # Refusals by index into `batch`; a refused renewal is dead-lettered here, as the sweep does.
        position = {id(item): index for index, item in enumerate(incoming)}
        refusals = []
        for refusal in plan.refusals:
            item = merged[refusal.index]
            if id(item) in position:
                refusals.append(replace(refusal, index=position[id(item)]))
            else:
                await self._refuse_renewal(item, refusal)
        return refusals

    async def on_observed_renewals(self, batch: Sequence[ObservedClaimsRenewed]) -> list[Refusal]:
        """Apply the claims observers renewed together, as the observer's MASTER reports they stand for.

        One transaction for the run, through the same plan as any report. What cannot count is
        refused by record (its index in `batch`), naming each claim; the rest of the record applies.
        """
        incoming: list[IncomingReport] = []
        record_of: list[int] = []
        for index, record in enumerate(batch):
            lease = timedelta(seconds=record.lease_seconds)
            for claim in record.claims:
                incoming.append(
                    IncomingReport(
                        havip_id=claim.havip_id,
                        tenant_id=claim.tenant_id,
                        message_id=record.message_id,
                        report=Report(
                            instance_id=claim.instance_id,
                            state=VrrpState.MASTER,
                            priority=claim.priority,
                            seq=claim.seq,
                            reported_at=claim.seen_at,
                            received_at=claim.seen_at,
                            expires_at=claim.seen_at + lease,
                            source=ReportSource.OBSERVER,
                        ),
                        renewal=True,
                    )
                )
                record_of.append(index)
        # As seen: each is judged against the claims as the ones seen before it left them.
        order = sorted(range(len(incoming)), key=lambda i: incoming[i].report.received_at)
        async with self._pool.acquire() as conn, conn.transaction():
            plan, states = await self._apply_reports(conn, [incoming[i] for i in order])
        self._count(plan)
        await self._publish_states(states)
        reasons: dict[int, list[Refusal]] = {}
        for refusal in plan.refusals:
            reasons.setdefault(record_of[order[refusal.index]], []).append(refusal)
        return [
            Refusal(index, refused[0].code, "; ".join(r.message for r in refused))
            for index, refused in sorted(reasons.items())
        ]

    async def apply_renewals(self) -> int:
        """Apply the lease renewals gateways left since the last look, a transaction per batch; how many.

        Most renewals only extend a live claim (election.only_extends): those are stored as judged,
        in one statement, without locking their HAVIPs or electing; the rest (a claim that lapsed
        meanwhile, a report applied since) go through the election like any report.
        """
        applied = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                taken = await store.take_renewals(conn, RENEWALS_PER_TRANSACTION)
                if not taken:
                    return applied
                stored = await store.load_reports(conn, [(item.havip_id, item.report.instance_id) for item in taken])
                quick = [
                    item
                    for item in taken
                    if only_extends(stored.get((item.havip_id, item.report.instance_id)), item.report)
                ]
                extended = await store.extend_claims(conn, quick, stored)
                rest = [item for item in taken if (item.havip_id, item.report.instance_id) not in extended]
                # As they arrived: each is judged against the claims as the ones before it left them.
                rest.sort(key=lambda item: item.report.received_at)
                plan, states = await self._apply_reports(conn, rest) if rest else (ReportPlan(), [])
            RENEWALS_EXTENDED.inc(len(extended))
            self._count(plan)
            await self._publish_states(states)
            for refusal in plan.refusals:
                await self._refuse_renewal(rest[refusal.index], refusal)
            RENEWALS_APPLIED.labels("sweep").inc(len(taken))
            applied += len(taken)
            if len(taken) < RENEWALS_PER_TRANSACTION:
                return applied

    async def _apply_reports(
        self, conn: asyncpg.Connection, incoming: Sequence[IncomingReport]
    ) -> tuple[ReportPlan, list[HaVipMappingChanged]]:
        """Decide and store reports inside the caller's transaction; the plan, and the states to publish."""
        rows = await store.lock_havips(conn, {item.havip_id for item in incoming})
        contests = await store.load_contests(conn, {row["havip_id"]: row["owner_target_id"] for row in rows})
        locked = {
            row["havip_id"]: LockedHavip(
                havip_id=row["havip_id"],
                tenant_id=row["tenant_id"],
                version=row["version"],
                published_version=row["published_version"],
                contest=contests[row["havip_id"]],
            )
            for row in rows
        }
        plan = plan_reports(locked, incoming)
        await store.save_batch(conn, plan.reports, plan.havips, plan.outcomes)
        # Read before the commit, on this connection: what is about to be committed, without
        # another connection and its round trips on the failover path.
        return plan, await self._states(conn, plan.publish, plan.caused_at)

    def _count(self, plan: ReportPlan) -> None:
        for verdict, count in plan.verdicts.items():
            REPORTS.labels(verdict.value).inc(count)
        causes = Counter(outcome.change.cause.value for outcome in plan.outcomes)
        for cause, count in causes.items():
            OWNER_CHANGES.labels(cause).inc(count)
        # A failover is worth a line each; a flood of them (a rack lost, a replay) is summed
        # up in one, so logging does not become the worker's main cost. History keeps each one.
        detailed = len(plan.outcomes) <= OWNER_CHANGES_LOGGED_EACH
        for outcome in plan.outcomes:
            log.log(
                logging.INFO if detailed else logging.DEBUG,
                "owner changed havip=%s cause=%s trigger=%s detail=%s",
                outcome.havip_id,
                outcome.change.cause.value,
                outcome.trigger.kind.value,
                outcome.change.detail,
            )
        if not detailed:
            log.info(
                "owner changed on %d HAVIPs in one batch (%s); each is in their owner history",
                len(plan.outcomes),
                ", ".join(f"{cause}={count}" for cause, count in sorted(causes.items())),
            )

    async def expire_leases(self, at: datetime | None = None) -> int:
        """Hand over every HAVIP whose owner's claim ran out while another claim is live; how many changed."""
        at = at or utcnow()
        changed: list[str] = []
        for havip_id in await store.havips_with_lapsed_owner(self._pool, at):
            async with self._pool.acquire() as conn, conn.transaction():
                havip = await store.lock_havip(conn, havip_id)
                if havip is None:
                    continue
                before = await store.load_contest(conn, havip_id, havip["owner_target_id"])
                if not lapse_due(before, at):
                    continue  # a renewal or another change got there first
                owner = before.candidate(before.owner_target_id)
                expired = before.reports[owner.instance_id].expires_at if owner else None
                trigger = Trigger(TriggerKind.LEASE_EXPIRY, lease_expired_at=expired)
                if not await self._reelect(conn, havip_id, before, at, trigger, only_if_owner_changed=True):
                    continue
            changed.append(havip_id)
        await self.publish_states(changed)
        return len(changed)

    async def on_inventory(self, change: InventoryChange) -> None:
        instance_id = change.instance_id if isinstance(change, InstanceChanged | EniChanged) else None
        affected: list[str] = []
        at = utcnow()
        trigger = Trigger(TriggerKind.INVENTORY, message_id=change.message_id, instance_id=instance_id)
        async with self._pool.acquire() as conn, conn.transaction():
            havips = await store.lock_havips_of_instance(conn, instance_id) if instance_id else []
            befores = [await store.load_contest(conn, h["havip_id"], h["owner_target_id"]) for h in havips]
            if not await record_inventory(conn, change, "mapping"):
                return
            for havip, before in zip(havips, befores, strict=True):
                # A stopped instance loses ownership; a moved one changes the route: publish either way.
                await self._reelect(conn, havip["havip_id"], before, at, trigger)
                affected.append(havip["havip_id"])
        await self.publish_states(affected)

    async def _reelect(
        self,
        conn: asyncpg.Connection,
        havip_id: str,
        before: Contest,
        at: datetime,
        trigger: Trigger,
        *,
        after: Contest | None = None,
        only_if_owner_changed: bool = False,
    ) -> bool:
        """Elect from `after` (read from the tables unless the caller knows it) and store the outcome.

        True when something was stored (so the HAVIP's state must be published).
        """
        if after is None:
            after = await store.load_contest(conn, havip_id, before.owner_target_id)
        owner = elect(after, at)
        change = explain(before, after, owner, at)
        if change is None and only_if_owner_changed:
            return False
        await store.save_outcome(conn, havip_id, after, owner, change, trigger)
        if change is not None:
            OWNER_CHANGES.labels(change.cause.value).inc()
            log.info(
                "owner changed havip=%s cause=%s trigger=%s detail=%s",
                havip_id,
                change.cause.value,
                trigger.kind.value,
                change.detail,
            )
        return True

    async def publish_states(self, havip_ids: Collection[str], caused_at: Mapping[str, datetime] | None = None) -> None:
        """Publish the committed state of these HAVIPs, then record the versions now published.

        `caused_at`: when the gateway accepted the report behind a HAVIP's change, carried to the
        forwarder so it can tell how long a failover took to reach it.
        """
        await self._publish_states(await self._states(self._pool, havip_ids, caused_at))

    async def _states(
        self,
        db: asyncpg.Connection | asyncpg.Pool,
        havip_ids: Collection[str],
        caused_at: Mapping[str, datetime] | None = None,
    ) -> list[HaVipMappingChanged]:
        if not havip_ids:
            return []
        mappings = await load_mappings(db, sorted(havip_ids))
        if caused_at:
            mappings = [
                m.model_copy(update={"report_received_at": caused_at[m.havip_id]}) if m.havip_id in caused_at else m
                for m in mappings
            ]
        return mappings

    async def _publish_states(self, mappings: Sequence[HaVipMappingChanged]) -> None:
        if not mappings:
            return
        await self._publish(topics.MAPPINGS, [(m.havip_id, topics.encode(m)) for m in mappings])
        await store.mark_published(self._pool, {m.havip_id: m.version for m in mappings})

    async def publish_unpublished(self) -> int:
        """Publish what is committed but was never published (a worker died between the two)."""
        published = 0
        while True:  # all of it (after a lost broker that is every HAVIP), a bounded read at a time
            havip_ids = await store.unpublished_havips(
                self._pool, older_than=timedelta(seconds=2), limit=UNPUBLISHED_READ
            )
            await self.publish_states(havip_ids)
            published += len(havip_ids)
            if len(havip_ids) < UNPUBLISHED_READ:
                return published

    async def sweep(self) -> None:
        """Run by every worker on a short timer: renewals, then lapsed leases, then anything left unpublished.

        Renewals first, so a claim renewed in time is never taken for lapsed because its renewal
        was still waiting to be applied.
        """
        await self.apply_renewals()
        await self.expire_leases()
        await self.publish_unpublished()
        if time.monotonic() - self._renewals_forgotten_at > FORGET_RENEWALS_AFTER.total_seconds() / 10:
            self._renewals_forgotten_at = time.monotonic()
            await store.forget_renewals(self._pool, FORGET_RENEWALS_AFTER)
