"""What leaves the mapping service: HAVIP states on `havip.mappings`, and the account of owner changes.

A HAVIP's full state is published whenever it changed, and the version on
`havip.mappings` is recorded (`published_version`). If the worker died
between its database commit and its publish, the redelivered message finds
the HAVIP committed but unpublished and publishes it, and the sweep
publishes whatever else is left so (a lease expiry has no message to
redeliver). Forwarders apply a state only if its version is newer, so
repeats are free.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter as MetricCounter

from schemas import topics
from schemas.messages import HaVipMappingChanged
from services.mapping.report_batch import IncomingReport, OwnerOutcome, Refusal, ReportPlan
from services.mapping.store import MappingStore, MappingTransaction

log = logging.getLogger(__name__)

OWNER_CHANGES = MetricCounter("havip_owner_changes_total", "Owner changes", ["cause"])
REPORTS = MetricCounter("havip_vrrp_reports_total", "VRRP reports by verdict", ["verdict"])

# Owner changes of one batch logged a line each; more are summed up in one line.
OWNER_CHANGES_LOGGED_EACH = 10

# Produces (key, value) records to a topic and returns once the broker has them all.
Publish = Callable[[topics.Topic, Sequence[tuple[str, bytes]]], Awaitable[None]]
# Keeps a renewal that cannot count where an operator sees it (the dead letters), with the reason.
RefuseRenewal = Callable[[IncomingReport, Refusal], Awaitable[None]]


@dataclass(frozen=True)
class MappingContext:
    """What every handler of the mapping service works with: its tables and its ways out."""

    store: MappingStore
    publish: Publish
    refuse_renewal: RefuseRenewal

    async def states(
        self,
        source: MappingStore | MappingTransaction,
        havip_ids: Collection[str],
        caused_at: Mapping[str, datetime] | None = None,
    ) -> list[HaVipMappingChanged]:
        """The states of these HAVIPs to publish, as `source` sees them.

        `caused_at`: when the gateway accepted the report behind a HAVIP's change, carried to the
        forwarder so it can tell how long a failover took to reach it.
        """
        if not havip_ids:
            return []
        mappings = await source.states(havip_ids)
        if caused_at:
            mappings = [
                m.model_copy(update={"report_received_at": caused_at[m.havip_id]}) if m.havip_id in caused_at else m
                for m in mappings
            ]
        return mappings

    async def publish_states(self, mappings: Sequence[HaVipMappingChanged]) -> None:
        """Publish these states, then record the versions now published."""
        if not mappings:
            return
        await self.publish(topics.MAPPINGS, [(m.havip_id, topics.encode(m)) for m in mappings])
        await self.store.mark_published({m.havip_id: m.version for m in mappings})

    async def publish_committed(self, havip_ids: Collection[str]) -> None:
        """Publish the committed state of these HAVIPs."""
        await self.publish_states(await self.states(self.store, havip_ids))


def account(plan: ReportPlan) -> None:
    """Count a plan's verdicts and account for its owner changes."""
    for verdict, count in plan.verdicts.items():
        REPORTS.labels(verdict.value).inc(count)
    owner_changed(plan.outcomes)


def owner_changed(outcomes: Sequence[OwnerOutcome]) -> None:
    """The one place owner changes are counted and logged, whatever caused them."""
    causes = Counter(outcome.change.cause.value for outcome in outcomes)
    for cause, count in causes.items():
        OWNER_CHANGES.labels(cause).inc(count)
    # A failover is worth a line each; a flood of them (a rack lost, a replay) is summed
    # up in one, so logging does not become the worker's main cost. History keeps each one.
    detailed = len(outcomes) <= OWNER_CHANGES_LOGGED_EACH
    for outcome in outcomes:
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
            len(outcomes),
            ", ".join(f"{cause}={count}" for cause, count in sorted(causes.items())),
        )
