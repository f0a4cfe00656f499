"""`havip observe`: the instances' ports on one host, watched; what keepalived announces there, published.

A frame is read the moment its port's socket is readable (the kernel filter lets only ARP and
VRRP through, and never a frame the host sends toward the instance), judged against the host
view (whose port, which HAVIP, attached or not), turned into claims by the claim book, and a
claim that changed is put on `vrrp.events` at once as the observer's report. Three timers:
lapses (every 100 ms), renewals of the live claims (one record per partition every few
seconds) and the ports themselves (opened as the inventory names them, closed when it stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter, Gauge

from schemas import topics
from schemas.errors import ErrorCode
from schemas.messages import (
    MAX_RENEWED_CLAIMS,
    ObservedClaimsRenewed,
    RenewedClaim,
    ReportSource,
    VrrpReported,
    VrrpState,
    utcnow,
)
from services.observe import capture
from services.observe.claims import ClaimBook, ClaimKey, Observed
from services.observe.frames import GratuitousArp, MalformedFrame, VrrpAdvert, read_frame
from services.observe.hostview import HostView, Port, Standing
from services.observe.outbox import RETRY_SECONDS, SEND_FAILURES, ReportOutbox
from services.observe.reader import PortReader
from services.runtime.deadletters import DeadLetters
from services.runtime.kafka import topic_name
from services.runtime.settings import Settings
from services.runtime.tasks import until_one_ends
from services.runtime.transient import BROKER_UNAVAILABLE

log = logging.getLogger(__name__)

FRAMES = Counter("havip_observe_frames_total", "Frames read on the instances' ports", ["kind", "outcome"])
RENEWED = Counter("havip_observe_renewed_claims_total", "Live claims renewed (together, per partition)")
UNEXPECTED = Counter(
    "havip_observe_unexpected_claims_total",
    "Adverts (vrrp) and gratuitous ARPs (garp) for a HAVIP's address from an instance that may not claim it",
    ["kind"],
)
PORTS = Gauge("havip_observe_ports", "Ports of this host's instances", ["state"])

# The longest the lapse timer sleeps: a claim made meanwhile lapses no earlier than three intervals later.
LAPSE_LOOK_SECONDS = 0.5
PORT_LOOK_SECONDS = 1.0
# An unexpected claimant advertises every second: the first advert and the first GARP of each
# (port, address) are dead-lettered once a minute, the metric counts them all.
UNEXPECTED_LETTER_EVERY = 60.0


class Observer:
    def __init__(
        self, settings: Settings, view: HostView, producer: AIOKafkaProducer, dead_letters: DeadLetters
    ) -> None:
        self._settings = settings
        self._view = view
        self._producer = producer
        self._dead_letters = dead_letters
        self._book = ClaimBook()
        self._vrrp_topic = topic_name(settings, topics.VRRP)
        self._missing: dict[str, str] = {}
        self._outbox = ReportOutbox(producer, self._vrrp_topic)
        self._reader = PortReader(self._frames, self._port_lost)
        self._letters: asyncio.Queue[tuple[Port, str, bytes, str]] = asyncio.Queue()
        self._lettered_at: dict[tuple[str, str, str], float] = {}
        self._seq = 0
        self._ports_changed = asyncio.Event()
        self._partitioner = DefaultPartitioner()

    # --- what other parts call ---------------------------------------------------------

    def ports_changed(self) -> None:
        self._ports_changed.set()

    def missing_ports(self) -> str | None:
        """Ports the inventory names that cannot be watched (a note on /readyz, not unreadiness)."""
        if not self._missing:
            return None
        shown = ", ".join(f"{name}: {why}" for name, why in sorted(self._missing.items())[:5])
        return f"{len(self._missing)} ports not watched ({shown})"

    async def run(self) -> None:
        self._reader.start(asyncio.get_running_loop())
        try:
            await until_one_ends(
                {
                    "observe ports": self._watch_ports(),
                    "observe publish": self._outbox.run(),
                    "observe lapses": self._lapse(),
                    "observe renewals": self._renew(),
                    "observe unexpected claimants": self._letter(),
                }
            )
        finally:
            self._reader.stop()

    # --- frames ---------------------------------------------------------------------

    def _frames(self, frames: list[tuple[str, bytes]], now: float, read_at: float) -> None:
        """What the port reader read in one go (services/observe/reader.py), in order: `now` on the
        monotonic clock for the claims' timers, `read_at` on the wall clock for what is published."""
        ports = self._view.ports()
        at = datetime.fromtimestamp(read_at, UTC)
        for name, frame in frames:
            port = ports.get(name)
            if port is not None:
                self.on_frame(port, frame, now, at)

    def _port_lost(self, name: str, exc: OSError) -> None:
        # The port went away (its instance stopped or moved): look for it again later.
        log.warning("port %s stopped answering (%s); watching it again once it is back", name, exc)
        self._missing[name] = str(exc)

    def on_frame(self, port: Port, frame: bytes, now: float, at: datetime) -> None:
        """One frame that arrived on `port`: whatever it claims is the claim of the port's instance."""
        seen = _parsed(frame)
        if isinstance(seen, MalformedFrame):
            _counter("malformed", "dropped").inc()
            log.debug("malformed frame on %s: %s", port.name, seen)
            return
        if seen is None:
            _counter("other", "ignored").inc()
            return
        kind = "vrrp" if isinstance(seen, VrrpAdvert) else "garp"
        if log.isEnabledFor(logging.DEBUG):  # the lab times adverts by these lines; at scale they cost
            log.debug("frame port=%s at=%.6f %s", port.name, at.timestamp(), seen)
        addresses = seen.addresses if isinstance(seen, VrrpAdvert) else (seen.address,)
        for address in addresses:
            judgement = self._view.judge(port, address)
            _counter(kind, judgement.standing.value).inc()
            if judgement.standing is Standing.NOT_A_HAVIP:
                continue
            if judgement.standing is Standing.UNEXPECTED:
                self._unexpected(port, str(address), kind, frame, seen, judgement.reason)
                continue
            assert judgement.havip is not None
            key = ClaimKey(judgement.havip.havip_id, port.instance_id, port.tenant_id)
            if isinstance(seen, VrrpAdvert):
                change = self._book.advert(key, seen.priority, seen.interval_seconds, now, at)
            else:
                change = self._book.gratuitous_arp(key, now, at)
            if change is not None:
                self._report(change)

    def _unexpected(
        self, port: Port, address: str, kind: str, frame: bytes, seen: VrrpAdvert | GratuitousArp, why: str
    ) -> None:
        UNEXPECTED.labels(kind).inc()
        now = time.monotonic()
        last = self._lettered_at.get((port.name, address, kind))
        if last is not None and now - last < UNEXPECTED_LETTER_EVERY:
            return
        self._lettered_at[(port.name, address, kind)] = now
        reason = _describe(seen, why)  # only for what is lettered: an intruder sends one a second
        log.warning(
            "unexpected claimant port=%s instance=%s address=%s: %s", port.name, port.instance_id, address, reason
        )
        self._letters.put_nowait((port, address, frame, reason))

    # --- publishing -------------------------------------------------------------------

    def _next_seq(self) -> int:
        # The observer's clock in microseconds, never repeating: its reports are ordered by it.
        self._seq = max(time.time_ns() // 1000, self._seq + 1)
        return self._seq

    def _report(self, change: Observed) -> None:
        lease = self._settings.observe_lease_seconds if change.lease_seconds is None else change.lease_seconds
        report = VrrpReported(
            havip_id=change.key.havip_id,
            tenant_id=change.key.tenant_id,
            instance_id=change.key.instance_id,
            state=change.state,
            priority=change.priority,
            seq=self._next_seq(),
            reported_at=change.seen_at,
            received_at=change.seen_at,
            lease_seconds=lease if change.state is VrrpState.MASTER else None,
            source=ReportSource.OBSERVER,
        )
        log.info(
            "observed instance=%s havip=%s state=%s priority=%s seen_at=%.6f: %s",
            report.instance_id,
            report.havip_id,
            report.state.value,
            report.priority,
            change.seen_at.timestamp(),
            change.why,
        )
        self._outbox.put(report)

    async def _lapse(self) -> None:
        # Wakes when the earliest claim would lapse (an advert meanwhile moves it on), so a lapse is
        # published the moment it is due: before the backup keepalived promotes has claimed.
        while True:
            for change in self._book.lapse(time.monotonic(), utcnow()):
                self._report(change)
            due = self._book.next_lapse()
            wait = LAPSE_LOOK_SECONDS if due is None else due - time.monotonic()
            await asyncio.sleep(min(max(wait, 0.001), LAPSE_LOOK_SECONDS))

    async def _renew(self) -> None:
        every = self._settings.observe_renew_seconds
        while True:
            await asyncio.sleep(every)
            self._book.forget(self._view.possible)
            try:
                await self.renew_live_claims()
            except BROKER_UNAVAILABLE as exc:
                # The next round renews them all again; the lease outlasts two lost rounds.
                SEND_FAILURES.labels("renewals").inc()
                log.warning("could not renew the live claims (%r); the next round will", exc)

    async def renew_live_claims(self) -> int:
        """Repeat every live claim, one record per partition of vrrp.events; how many claims."""
        live = self._book.live_claims()
        if not live:
            return 0
        partitions = sorted(await self._producer.partitions_for(self._vrrp_topic))
        by_partition: dict[int, list[RenewedClaim]] = defaultdict(list)
        for claim in live:
            key = claim.key.havip_id.encode()
            partition = self._partitioner(key, partitions, partitions)
            by_partition[partition].append(
                RenewedClaim(
                    havip_id=claim.key.havip_id,
                    tenant_id=claim.key.tenant_id,
                    instance_id=claim.key.instance_id,
                    priority=claim.priority,
                    seq=self._next_seq(),
                    seen_at=claim.seen_at,
                )
            )
        sent = []
        for partition, claims in sorted(by_partition.items()):
            for start in range(0, len(claims), MAX_RENEWED_CLAIMS):
                chunk = claims[start : start + MAX_RENEWED_CLAIMS]
                record = ObservedClaimsRenewed(
                    observer_id=self._view.host_id,
                    lease_seconds=self._settings.observe_lease_seconds,
                    claims=chunk,
                )
                sent.append(
                    await self._producer.send(
                        self._vrrp_topic,
                        key=chunk[0].havip_id.encode(),
                        value=topics.encode(record),
                        partition=partition,
                    )
                )
        await asyncio.gather(*sent)
        RENEWED.inc(len(live))
        return len(live)

    async def _letter(self) -> None:
        source = f"observe:{self._view.host_id}"
        while True:
            port, address, frame, reason = await self._letters.get()
            while True:
                try:
                    await self._dead_letters.send(
                        source_topic=source,
                        partition=-1,
                        offset=-1,
                        key=address.encode(),
                        value=frame,
                        code=ErrorCode.UNEXPECTED_CLAIMANT,
                        reason=f"port {port.name} of {port.instance_id} (tenant {port.tenant_id}): {reason}",
                    )
                    break
                except BROKER_UNAVAILABLE as exc:
                    SEND_FAILURES.labels("dead-letters").inc()
                    log.warning("could not dead-letter an unexpected claimant (%r); trying again", exc)
                    await asyncio.sleep(RETRY_SECONDS)

    # --- ports ------------------------------------------------------------------------

    async def _watch_ports(self) -> None:
        while True:
            self._sync_ports()
            self._forget_letters()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ports_changed.wait(), PORT_LOOK_SECONDS)
            self._ports_changed.clear()

    def _sync_ports(self) -> None:
        wanted = self._view.ports()
        watching = self._reader.watching()
        for name in watching - set(wanted):
            self._reader.remove(name)
        for name in [name for name in self._missing if name not in wanted]:
            del self._missing[name]
        netns = self._settings.observe_netns or None
        for name in wanted:
            if name in watching:
                continue
            try:
                sock = capture.open_port(name, netns)
            except capture.PortUnavailable as exc:
                if name not in self._missing:
                    log.info("port %s not there (yet): %s", name, exc)
                self._missing[name] = str(exc)
                continue
            self._missing.pop(name, None)
            self._reader.add(name, sock)
            log.info("watching port %s of %s", name, wanted[name].instance_id)
        PORTS.labels("watched").set(len(self._reader.watching()))
        PORTS.labels("missing").set(len(self._missing))

    def _forget_letters(self) -> None:
        cutoff = time.monotonic() - UNEXPECTED_LETTER_EVERY
        for key in [key for key, at in self._lettered_at.items() if at < cutoff]:
            del self._lettered_at[key]


@functools.lru_cache(maxsize=8192)
def _parsed(frame: bytes) -> VrrpAdvert | GratuitousArp | MalformedFrame | None:
    # keepalived repeats the same advert, byte for byte, every interval: each distinct one is read once.
    try:
        return read_frame(frame)
    except MalformedFrame as exc:
        return exc


@functools.cache
def _counter(kind: str, outcome: str) -> Counter:
    # The labelled child, found once: a label lookup per frame was a visible share of the CPU.
    return FRAMES.labels(kind, outcome)


def _describe(seen: VrrpAdvert | GratuitousArp, reason: str) -> str:
    if isinstance(seen, VrrpAdvert):
        return (
            f"VRRPv{seen.version} advert (VRID {seen.vrid}, priority {seen.priority}, from {seen.source_ip}): {reason}"
        )
    return f"gratuitous ARP for {seen.address}: {reason}"
