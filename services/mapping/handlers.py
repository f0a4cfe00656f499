"""What the mapping service does with each message: parse → decide (pure) → persist → publish.

One handler per message, registered in main.py: an accepted command, a batch of
VRRP reports, a batch of an observer's renewed claims, an inventory change. The
rules are election.py, report_batch.py and commands.py; the tables are behind
`store.MappingStore`; states go out through `publishing`.

VRRP reports come in batches (see report_batch.py): a bounded number of
statements per batch, however many reports it holds. Lease renewals (every
live master renews every second) do not come through Kafka: gateways leave
the newest one of each claim in `claim_renewals`; the sweep takes them
(sweep.py), and a batch of reports takes those of its own HAVIPs with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from prometheus_client import Counter as MetricCounter

from schemas import topics
from schemas.errors import ErrorCode, HaVipError
from schemas.messages import (
    Accepted,
    CommandRejected,
    CommandSucceeded,
    EniChanged,
    HaVipMappingChanged,
    InstanceChanged,
    ObservedClaimsRenewed,
    ReportSource,
    VrrpReported,
    utcnow,
)
from services.mapping.commands import COMMAND_TYPE, Reelect, apply_accepted
from services.mapping.election import Contest, Trigger, TriggerKind, VrrpReport, elect, explain
from services.mapping.publishing import MappingContext, account, owner_changed
from services.mapping.report_batch import (
    IncomingReport,
    OwnerOutcome,
    Refusal,
    ReportPlan,
    claim_renewal,
    havip_status,
    in_arrival_order,
    plan_reports,
)
from services.mapping.store import CannotHold, CommandAnswer, MappingTransaction
from services.runtime.inventory import InventoryChange

log = logging.getLogger(__name__)

RENEWALS_APPLIED = MetricCounter(
    "havip_mapping_renewals_applied_total", "Lease renewals taken from claim_renewals and applied", ["with"]
)


def report_of(reported: VrrpReported) -> VrrpReport:
    return VrrpReport(
        instance_id=reported.instance_id,
        state=reported.state,
        priority=reported.priority,
        seq=reported.seq,
        reported_at=reported.reported_at,
        received_at=reported.received_at,
        expires_at=reported.lease_ends_at,
        source=reported.source,
    )


async def on_accepted(context: MappingContext, command: Accepted) -> None:
    """Apply what quota accepted (once per command id), publish the HAVIP, answer on havip.command-results."""
    async with context.store.transaction() as tx:
        answer = await tx.command_answer(command.command_id)
        if answer is None:
            answer = await _apply_once(tx, command)
            await tx.record_command(command.command_id, command.havip_id, answer)
    await context.publish_committed([command.havip_id])
    outcome = {
        "command_id": command.command_id,
        "tenant_id": command.tenant_id,
        "havip_id": command.havip_id,
        "command_type": COMMAND_TYPE[type(command)],
        "stage": "mapping",
    }
    result: CommandSucceeded | CommandRejected = (
        CommandSucceeded(**outcome)
        if answer.code is None
        else CommandRejected(**outcome, code=answer.code, reason=answer.reason or "")
    )
    await context.publish(topics.RESULTS, [(command.command_id, topics.encode(result))])


async def _apply_once(tx: MappingTransaction, command: Accepted) -> CommandAnswer:
    try:
        async with tx.savepoint():  # a refusal undoes only the command's own changes
            await apply_accepted(tx, command, _reelect_for(command))
    except HaVipError as exc:
        log.warning("command refused command=%s code=%s %s", command.command_id, exc.code, exc.message)
        return CommandAnswer(exc.code, exc.message)
    except CannotHold as exc:
        # Data the tables cannot hold will never apply: answer it (so quota releases its
        # reservation and the operation ends) rather than leave it Pending forever.
        log.error("command unappliable command=%s error=%r", command.command_id, exc)
        return CommandAnswer(ErrorCode.APPLY_FAILED, f"the mapping tables cannot hold this command: {exc}")
    return CommandAnswer()


def _reelect_for(command: Accepted) -> Reelect:
    async def reelect(tx: MappingTransaction, havip_id: str, before: Contest) -> bool:
        trigger = Trigger(TriggerKind.COMMAND, message_id=command.command_id)
        return await reelect_and_save(tx, havip_id, before, utcnow(), trigger)

    return reelect


async def reelect_and_save(
    tx: MappingTransaction,
    havip_id: str,
    before: Contest,
    at: datetime,
    trigger: Trigger,
    *,
    only_if_owner_changed: bool = False,
) -> bool:
    """Elect from the tables as they are now and store the outcome at a new version.

    True when something was stored (so the HAVIP's state must be published).
    """
    after = await tx.load_contest(havip_id, before.owner_target_id)
    owner = elect(after, at)
    change = explain(before, after, owner, at)
    if change is None and only_if_owner_changed:
        return False
    version = await tx.save_owner(havip_id, owner.target_id if owner else None, havip_status(after))
    if change is not None:
        outcome = OwnerOutcome(havip_id, version, owner, change, trigger)
        await tx.save_batch({}, {}, [outcome])
        owner_changed([outcome])
    return True


async def apply_reports(
    context: MappingContext, tx: MappingTransaction, incoming: Sequence[IncomingReport]
) -> tuple[ReportPlan, list[HaVipMappingChanged]]:
    """Decide and store reports inside `tx`; the plan, and the states to publish once it commits."""
    locked = {havip.havip_id: havip for havip in await tx.lock_havips({item.havip_id for item in incoming})}
    plan = plan_reports(locked, incoming)
    await tx.save_batch(plan.reports, plan.havips, plan.outcomes)
    return plan, await context.states(tx, plan.publish, plan.caused_at)


async def on_reports(context: MappingContext, batch: Sequence[VrrpReported]) -> list[Refusal]:
    """Apply reports in the order given, in one transaction; the ones that cannot count (by index).

    The renewals gateways left for the same HAVIPs are applied with them, each where it
    arrived (`in_arrival_order`): a state change is judged against claims as renewed by
    then, and waits for no other HAVIP's renewals.
    """
    incoming = [IncomingReport(r.havip_id, r.tenant_id, r.message_id, report_of(r)) for r in batch]
    async with context.store.transaction() as tx:
        renewals = await tx.take_renewals(len(incoming), {item.havip_id for item in incoming})
        merged = in_arrival_order(incoming, renewals) if renewals else incoming
        plan, states = await apply_reports(context, tx, merged)
    RENEWALS_APPLIED.labels("state-changes").inc(len(renewals))
    account(plan)
    await context.publish_states(states)
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
            await context.refuse_renewal(item, refusal)
    return refusals


async def on_observed_renewals(context: MappingContext, batch: Sequence[ObservedClaimsRenewed]) -> list[Refusal]:
    """Apply the claims observers renewed together, as the observer's MASTER reports they stand for.

    One transaction for the run, through the same plan as any report. What cannot count is
    refused by record (its index in `batch`), naming each claim; the rest of the record applies.
    """
    incoming: list[IncomingReport] = []
    record_of: list[int] = []
    for index, record in enumerate(batch):
        for claim in record.claims:
            incoming.append(
                claim_renewal(
                    claim.havip_id,
                    claim.tenant_id,
                    record.message_id,
                    claim.instance_id,
                    priority=claim.priority,
                    seq=claim.seq,
                    reported_at=claim.seen_at,
                    received_at=claim.seen_at,
                    lease_seconds=record.lease_seconds,
                    source=ReportSource.OBSERVER,
                )
            )
            record_of.append(index)
    # As seen: each is judged against the claims as the ones seen before it left them.
    order = sorted(range(len(incoming)), key=lambda i: incoming[i].report.received_at)
    async with context.store.transaction() as tx:
        plan, states = await apply_reports(context, tx, [incoming[i] for i in order])
    account(plan)
    await context.publish_states(states)
    reasons: dict[int, list[Refusal]] = {}
    for refusal in plan.refusals:
        reasons.setdefault(record_of[order[refusal.index]], []).append(refusal)
    return [
        Refusal(index, refused[0].code, "; ".join(r.message for r in refused))
        for index, refused in sorted(reasons.items())
    ]


async def on_inventory(context: MappingContext, change: InventoryChange) -> None:
    """Keep the inventory change; re-elect every HAVIP the instance is attached to."""
    instance_id = change.instance_id if isinstance(change, InstanceChanged | EniChanged) else None
    affected: list[str] = []
    at = utcnow()
    trigger = Trigger(TriggerKind.INVENTORY, message_id=change.message_id, instance_id=instance_id)
    async with context.store.transaction() as tx:
        havips = await tx.lock_havips_of_instance(instance_id) if instance_id else []
        befores = [await tx.load_contest(h.havip_id, h.owner_target_id) for h in havips]
        if not await tx.record_inventory(change):
            return
        for havip, before in zip(havips, befores, strict=True):
            # A stopped instance loses ownership; a moved one changes the route: publish either way.
            await reelect_and_save(tx, havip.havip_id, before, at, trigger)
            affected.append(havip.havip_id)
    await context.publish_committed(affected)
