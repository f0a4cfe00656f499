"""Lease renewals: a heartbeat, carried apart from the state changes they would otherwise bury.

Every live master's agent repeats its MASTER claim about once a second so that it stays live
(its lease). On `vrrp.events` each repeat was one record: the log grew by a record per live
master per second, forever (the embedded broker can trim nothing, and its fetches slow down
with every record a partition holds: docs/benchmarks.md), and a BACKUP or a new MASTER waited
in its partition behind thousands of them. So the gateway tells a renewal from a state change
and carries renewals another way:

- **What a renewal is** (`is_renewal`, pure): a MASTER claim with a lease, from an instance
  whose last report this replica saw for the same HAVIP was a MASTER claim at the same
  priority that was still live when this one arrived. Anything else (the first claim, a
  claim after BACKUP or FAULT, a new priority, a claim after a lapse, a claim seen first by
  this replica) is a state change and goes to `vrrp.events` at once. A renewal taken for a
  state change costs one record; a state change can never be taken for a renewal, since
  every state change differs from the claim before it.
- **How renewals travel** (`RenewalLane`): the newest renewal of each claim is written to
  PostgreSQL (`claim_renewals`), one statement for whatever arrived while the last one was
  written, and the agent gets its 202 once that committed. Mapping workers take them from
  there and apply them through the same election as any report. Nothing is decided here.
- **While PostgreSQL is away** the renewals go to `vrrp.events` as before, so an outage of
  the database costs log records, never a lapsed claim (the README's "Reports while
  PostgreSQL is away" still holds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from prometheus_client import Counter, Histogram

from schemas import topics
from schemas.errors import ErrorCode, HaVipError
from schemas.messages import VrrpReported, VrrpState, report_order
from services.gateway.broker import BrokerLink
from services.runtime.transient import BROKER_UNAVAILABLE, DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

RENEWALS = Counter(
    "havip_gateway_renewals_total",
    "Lease renewals carried apart from vrrp.events, by where they went",
    ["route"],
)
RENEWAL_WRITES = Histogram(
    "havip_gateway_renewal_write_claims",
    "Claims in one write of the renewal lane",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)

# What this replica remembers of a claim it has not heard of for this long is dropped.
FORGET_AFTER = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class SeenReport:
    """The last report this replica saw from one instance for one HAVIP."""

    state: VrrpState
    priority: int
    seq: int
    reported_at: datetime
    received_at: datetime
    live_until: datetime | None  # a MASTER claim's lease end; None: no lease, or not a claim


def is_renewal(last: SeenReport | None, report: VrrpReported) -> bool:
    """Whether `report` only repeats a claim that was still live: the lane for heartbeats."""
    return (
        report.state is VrrpState.MASTER
        and report.lease_seconds is not None
        and report.lease_seconds > 0
        and last is not None
        and last.state is VrrpState.MASTER
        and last.priority == report.priority
        and last.live_until is not None
        and report.received_at < last.live_until
        and report_order(report.seq, report.reported_at) > report_order(last.seq, last.reported_at)
    )


def seen(report: VrrpReported) -> SeenReport:
    claims = report.state is VrrpState.MASTER and report.lease_seconds is not None and report.lease_seconds > 0
    return SeenReport(
        state=report.state,
        priority=report.priority,
        seq=report.seq,
        reported_at=report.reported_at,
        received_at=report.received_at,
        live_until=report.lease_ends_at if claims else None,
    )


class ClaimMemory:
    """The last report this replica saw per (HAVIP, instance); bounded by the claims heard lately."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], SeenReport] = {}
        self._forgotten_at: datetime | None = None

    def is_renewal(self, report: VrrpReported) -> bool:
        return is_renewal(self._last.get((report.havip_id, report.instance_id)), report)

    def saw(self, report: VrrpReported) -> None:
        key = (report.havip_id, report.instance_id)
        last = self._last.get(key)
        if last is None or report_order(report.seq, report.reported_at) > report_order(last.seq, last.reported_at):
            self._last[key] = seen(report)
        now = report.received_at
        if self._forgotten_at is None or now - self._forgotten_at > FORGET_AFTER / 4:
            self._forgotten_at = now
            self._last = {k: v for k, v in self._last.items() if now - v.received_at < FORGET_AFTER}

    def __len__(self) -> int:
        return len(self._last)


_WRITE = """
INSERT INTO claim_renewals (havip_id, instance_id, tenant_id, message_id, priority, seq, reported_at, received_at,
                            lease_seconds)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::bigint[], $7::timestamptz[],
                     $8::timestamptz[], $9::double precision[])
ON CONFLICT (havip_id, instance_id) DO UPDATE SET tenant_id = excluded.tenant_id, message_id = excluded.message_id,
    priority = excluded.priority, seq = excluded.seq, reported_at = excluded.reported_at,
    received_at = excluded.received_at, lease_seconds = excluded.lease_seconds, taken = false
 WHERE claim_renewals.seq < excluded.seq
"""


async def write_renewals(db: asyncpg.Pool | asyncpg.Connection, renewals: Sequence[VrrpReported]) -> None:
    """Leave the newest renewal of each claim for the mapping workers (at most one per claim)."""
    await db.execute(
        _WRITE,
        [r.havip_id for r in renewals],
        [r.instance_id for r in renewals],
        [r.tenant_id for r in renewals],
        [r.message_id for r in renewals],
        [r.priority for r in renewals],
        [r.seq for r in renewals],
        [r.reported_at for r in renewals],
        [r.received_at for r in renewals],
        [r.lease_seconds for r in renewals],
    )


class RenewalLane:
    """Carries renewals to PostgreSQL a batch at a time; to `vrrp.events` when it cannot."""

    def __init__(self, pool: asyncpg.Pool, broker: BrokerLink, vrrp_topic: str) -> None:
        self._pool = pool
        self._broker = broker
        self._topic = vrrp_topic
        self._pending: dict[tuple[str, str], VrrpReported] = {}
        self._waiting: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None

    async def carry(self, report: VrrpReported) -> None:
        """Return once the renewal is committed (or, PostgreSQL away, on the broker); 503 when neither took it."""
        key = (report.havip_id, report.instance_id)
        held = self._pending.get(key)
        if held is None or report_order(report.seq, report.reported_at) > report_order(held.seq, held.reported_at):
            self._pending[key] = report
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all(), name="renewal-lane")
        await done

    async def stop(self) -> None:
        if self._writer is not None:
            await asyncio.wait({self._writer})

    async def _write_all(self) -> None:
        # Whatever arrives while one batch is written becomes the next: a lone renewal waits for
        # nothing, and a busy gateway writes hundreds of claims per statement.
        waiting: list[asyncio.Future[None]] = []
        try:
            while self._pending:
                batch, waiting = list(self._pending.values()), self._waiting
                self._pending, self._waiting = {}, []
                _settle(waiting, await self._write(batch))
        except asyncio.CancelledError:  # the gateway is stopping: nobody waits forever
            stopping = HaVipError(ErrorCode.SERVICE_UNAVAILABLE, "the gateway is stopping; retry", retry_after=1)
            _settle([*waiting, *self._waiting], stopping)
            raise
        finally:
            self._writer = None

    async def _write(self, batch: Sequence[VrrpReported]) -> HaVipError | None:
        RENEWAL_WRITES.observe(len(batch))
        try:
            await write_renewals(self._pool, batch)
        except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("renewals not written (%r): %d go to %s instead", exc, len(batch), self._topic)
        else:
            RENEWALS.labels("database").inc(len(batch))
            return None
        try:
            self._broker.require_reachable()
            await asyncio.gather(
                *(self._broker.publish(self._topic, r.havip_id.encode(), topics.encode(r)) for r in batch)
            )
        except BROKER_UNAVAILABLE as exc:
            RENEWALS.labels("refused").inc(len(batch))
            log.warning("renewals not published either: %r", exc)
            return HaVipError(
                ErrorCode.SERVICE_UNAVAILABLE,
                "the renewal could not be recorded; retry",
                retry_after=self._broker.retry_after,
            )
        except HaVipError as exc:
            RENEWALS.labels("refused").inc(len(batch))
            return exc
        RENEWALS.labels("broker").inc(len(batch))
        return None


def _settle(waiting: Sequence[asyncio.Future[None]], outcome: HaVipError | None) -> None:
    for done in waiting:
        if done.done():
            continue
        if outcome is None:
            done.set_result(None)
        else:
            done.set_exception(outcome)
