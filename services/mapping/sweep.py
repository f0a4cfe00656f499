"""What every mapping worker does on a short timer, since it has no message of its own.

Renewals gateways left in `claim_renewals`, leases that ran out, states committed
but never published (a worker died between the two), and old renewal rows. Every
change happens under the HAVIPs' row locks, so two workers sweeping at once never
change one HAVIP twice.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from prometheus_client import Counter as MetricCounter

from schemas.messages import utcnow
from services.mapping.election import Trigger, TriggerKind, lapse_due, only_extends, renewed
from services.mapping.handlers import RENEWALS_APPLIED, apply_reports, reelect_and_save
from services.mapping.publishing import MappingContext, account
from services.mapping.report_batch import ReportPlan

RENEWALS_EXTENDED = MetricCounter(
    "havip_mapping_renewals_extended_total", "Renewals that only extended a live claim, stored without an election"
)

UNPUBLISHED_READ = 1000
LAPSES_READ = 1000
# Renewals applied per transaction: a state change for one of their HAVIPs waits for at most
# one such transaction's row locks, never for a backlog.
RENEWALS_PER_TRANSACTION = 500
# Rows of claims that stopped renewing are dropped this long after their last renewal.
FORGET_RENEWALS_AFTER = timedelta(minutes=10)


async def apply_renewals(context: MappingContext) -> int:
    """Apply the lease renewals gateways left since the last look, a transaction per batch; how many.

    Most renewals only extend a live claim (election.only_extends): those are stored as judged,
    in one statement, without locking their HAVIPs or electing; the rest (a claim that lapsed
    meanwhile, a report applied since) go through the election like any report.
    """
    applied = 0
    while True:
        async with context.store.transaction() as tx:
            taken = await tx.take_renewals(RENEWALS_PER_TRANSACTION)
            if not taken:
                return applied
            keys = [(item.havip_id, item.report.instance_id) for item in taken]
            stored = await tx.load_reports(keys)
            quick = {}
            for key, item in zip(keys, taken, strict=True):
                judged = stored.get(key)
                if only_extends(judged, item.report):
                    quick[key] = renewed(judged, item.report)
            extended = await tx.extend_claims(quick, stored)
            rest = [item for key, item in zip(keys, taken, strict=True) if key not in extended]
            # As they arrived: each is judged against the claims as the ones before it left them.
            rest.sort(key=lambda item: item.report.received_at)
            plan, states = await apply_reports(context, tx, rest) if rest else (ReportPlan(), [])
        RENEWALS_EXTENDED.inc(len(extended))
        account(plan)
        await context.publish_states(states)
        for refusal in plan.refusals:
            await context.refuse_renewal(rest[refusal.index], refusal)
        RENEWALS_APPLIED.labels("sweep").inc(len(taken))
        applied += len(taken)
        if len(taken) < RENEWALS_PER_TRANSACTION:
            return applied


async def expire_leases(context: MappingContext, at: datetime | None = None) -> int:
    """Hand over every HAVIP whose owner's claim ran out while another claim is live; how many changed."""
    at = at or utcnow()
    changed: list[str] = []
    after = ""
    while True:  # every candidate, a bounded read at a time: one that stays lapsed must not hide the rest
        candidates = await context.store.lapse_candidates(at, after, LAPSES_READ)
        for havip_id in candidates:
            async with context.store.transaction() as tx:
                havip = await tx.lock_havip(havip_id)
                if havip is None:
                    continue
                before = await tx.load_contest(havip_id, havip.owner_target_id)
                if not lapse_due(before, at):
                    continue  # a renewal or another change got there first, or no claim that may own
                owner = before.candidate(before.owner_target_id)
                expired = before.reports[owner.instance_id].expires_at if owner else None
                trigger = Trigger(TriggerKind.LEASE_EXPIRY, lease_expired_at=expired)
                if not await reelect_and_save(tx, havip_id, before, at, trigger, only_if_owner_changed=True):
                    continue
            changed.append(havip_id)
        if len(candidates) < LAPSES_READ:
            break
        after = candidates[-1]
    await context.publish_committed(changed)
    return len(changed)


async def publish_unpublished(context: MappingContext) -> int:
    """Publish what is committed but was never published (a worker died between the two)."""
    published = 0
    while True:  # all of it (after a lost broker that is every HAVIP), a bounded read at a time
        havip_ids = await context.store.unpublished_havips(timedelta(seconds=2), UNPUBLISHED_READ)
        await context.publish_committed(havip_ids)
        published += len(havip_ids)
        if len(havip_ids) < UNPUBLISHED_READ:
            return published


class Sweep:
    """The timer's work, in order: renewals, then lapsed leases, then anything left unpublished.

    Renewals first, so a claim renewed in time is never taken for lapsed because its renewal
    was still waiting to be applied.
    """

    def __init__(self, context: MappingContext) -> None:
        self._context = context
        self._renewals_forgotten_at = 0.0

    async def __call__(self) -> None:
        await apply_renewals(self._context)
        await expire_leases(self._context)
        await publish_unpublished(self._context)
        if time.monotonic() - self._renewals_forgotten_at > FORGET_RENEWALS_AFTER.total_seconds() / 10:
            self._renewals_forgotten_at = time.monotonic()
            await self._context.store.forget_renewals(FORGET_RENEWALS_AFTER)
