"""Background VRRP load for `havip bench failover`, produced straight to `vrrp.events`, paced.

Runs as its own process (`python -m services.dev.bench_load`), so producing
thousands of messages a second never delays the measuring process's clock.
On the HAVIPs of services/dev/bench_seed.py:
  renewals  the first half of the HAVIPs: each owner renews its MASTER claim
            (one a second per HAVIP at 5,000/s over 10,000 HAVIPs); with
            `--renewals-to table` they are written where the gateway leaves them
            (`claim_renewals`, services/gateway/renewals.py) rather than to the log
  reports   the second half: each owner alternately steps down (BACKUP) and
            claims again (MASTER), so every report changes the owner and is published
Pacing is by the clock (send what is due by now), so a slow moment is made up,
and what was really sent is printed as a JSON line every second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import topics
from schemas.messages import VrrpReported, VrrpState
from services.dev import bench_seed
from services.gateway.renewals import write_renewals
from services.runtime.db import connect_pool
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings, load_settings

_TICK = 0.01
_LEASE_SECONDS = 30.0

# A VrrpReported as the gateway would publish it, written by hand: building and validating the
# pydantic model costs more than the broker's produce, and would cap the load on a small machine.
# tests/unit/test_bench_load.py proves the text parses as a VrrpReported with these fields.
_REPORT = (
    '{{"message_id":"{message_id}","occurred_at":"{now}","schema_version":1,"type":"VrrpReported",'
    '"havip_id":"havip-{n}","tenant_id":"' + bench_seed.TENANT + '","instance_id":"{instance_id}",'
    '"state":"{state}","priority":100,"seq":{seq},"reported_at":"{now}","received_at":"{now}",'
    '"lease_seconds":{lease}}}'
)


@dataclass(kw_only=True)
class Numbering:
    """How many renewals and owner-changing reports a load has sent, and their seqs."""

    renewals_sent: int = 0
    reports_sent: int = 0
    _last_seq: int = 0

    def next_seq(self, now_us: int) -> int:
        # One counter for every instance, so each instance's seqs grow; in microseconds, so a later
        # run starts above an earlier one, as an agent's clock-based seq would.
        self._last_seq = max(self._last_seq + 1, now_us)
        return self._last_seq

    def _next_renewal(self, span: int) -> int:
        """The HAVIP of the next renewal: the first `span` in turn."""
        n = self.renewals_sent % max(1, span)
        self.renewals_sent += 1
        return n

    def _next_change(self, first: int, span: int) -> tuple[int, bool]:
        """The HAVIP of the next owner-changing report, from `first` on, and whether it claims
        MASTER: each round over the span releases (BACKUP), the next claims again."""
        span = max(1, span)
        n, round_ = first + self.reports_sent % span, self.reports_sent // span
        self.reports_sent += 1
        return n, round_ % 2 == 1


@dataclass
class LoadPlan(Numbering):
    """Which report is next on each side; pure, so the order of reports is testable without a broker."""

    havips: int

    def renewal(self, now_us: int) -> tuple[int, str, VrrpState, int]:
        """(HAVIP, instance, state, seq) of the next renewal."""
        n = self._next_renewal(self.havips // 2)
        return n, bench_seed.owner_of(n), VrrpState.MASTER, self.next_seq(now_us)

    def report(self, now_us: int) -> tuple[int, str, VrrpState, int]:
        """(HAVIP, instance, state, seq) of the next owner-changing report."""
        half = self.havips // 2
        n, claims = self._next_change(half, self.havips - half)
        state = VrrpState.MASTER if claims else VrrpState.BACKUP
        return n, bench_seed.owner_of(n), state, self.next_seq(now_us)


def due(rate: float, elapsed: float, sent: int) -> int:
    """How many messages are due now to keep `rate` per second since the start."""
    return max(0, int(rate * elapsed) - sent)


async def produce(
    settings: Settings, havips: int, reports_per_second: float, renewals_per_second: float, renewals_to_table: bool
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    plan = LoadPlan(havips)
    producer = new_producer(settings)
    await producer.start()
    pool = await connect_pool(settings.database_url, max_size=2) if renewals_to_table else None
    topic = topic_name(settings, topics.VRRP)
    started = last_said = time.monotonic()
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            now = datetime.now(UTC)
            now_us = int(now.timestamp() * 1_000_000)
            renewals = [plan.renewal(now_us) for _ in range(due(renewals_per_second, elapsed, plan.renewals_sent))]
            batch = [plan.report(now_us) for _ in range(due(reports_per_second, elapsed, plan.reports_sent))]
            if pool is not None:
                if renewals:
                    await write_renewals(pool, [renewal_of(*renewal, now=now) for renewal in renewals])
            else:
                batch += renewals
            for report in batch:
                key, value = encode_report(*report, now=now)
                # Returns once the record is in the producer's buffer; it waits only when that is full.
                await producer.send(topic, key=key, value=value)
            if time.monotonic() - last_said >= 1.0:
                last_said = time.monotonic()
                _say(plan, last_said - started)
            await asyncio.sleep(_TICK)
        await producer.flush()
    finally:
        _say(plan, time.monotonic() - started)
        await producer.stop()
        if pool is not None:
            await pool.close()


def stop_load(load: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """Stop the load; what it sent per second over its life (and, through the gateway, how it was
    answered), from its last JSON line."""
    if load.poll() is None:
        load.send_signal(signal.SIGTERM)
        try:
            load.wait(15)
        except subprocess.TimeoutExpired:
            load.kill()
            load.wait()
    said = [line for line in log.read_text().splitlines() if line.startswith("{")]
    if not said:
        raise RuntimeError(f"the background load said nothing: see {log}")
    last = json.loads(said[-1])
    seconds = last["seconds"] or 1.0
    return {
        "reports_per_second": last["reports"] / seconds,
        "renewals_per_second": last["renewals"] / seconds,
        "seconds": seconds,
        **({"answers": last["answers"]} if "answers" in last else {}),
    }


def renewal_of(n: int, instance_id: str, state: VrrpState, seq: int, *, now: datetime) -> VrrpReported:
    """A renewal as the gateway leaves it in `claim_renewals` (built without validation: it is ours)."""
    return VrrpReported.model_construct(
        message_id=str(uuid.uuid4()),
        havip_id=f"havip-{n}",
        tenant_id=bench_seed.TENANT,
        instance_id=instance_id,
        state=state,
        priority=100,
        seq=seq,
        reported_at=now,
        received_at=now,
        lease_seconds=_LEASE_SECONDS,
    )


def encode_report(n: int, instance_id: str, state: VrrpState, seq: int, *, now: datetime) -> tuple[bytes, bytes]:
    """Key and value of one report on `vrrp.events`; MASTER claims carry a lease, other states none."""
    value = _REPORT.format(
        message_id=uuid.uuid4(),
        now=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        n=n,
        instance_id=instance_id,
        state=state.value,
        seq=seq,
        lease=_LEASE_SECONDS if state is VrrpState.MASTER else "null",
    )
    return f"havip-{n}".encode(), value.encode()


def _say(plan: LoadPlan, elapsed: float) -> None:
    print(
        json.dumps({"seconds": elapsed, "reports": plan.reports_sent, "renewals": plan.renewals_sent}),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--havips", type=int, required=True)
    parser.add_argument("--reports-per-second", type=float, required=True)
    parser.add_argument("--renewals-per-second", type=float, required=True)
    parser.add_argument("--renewals-to", choices=["log", "table"], default="log")
    args = parser.parse_args()
    asyncio.run(
        produce(
            load_settings(),
            args.havips,
            args.reports_per_second,
            args.renewals_per_second,
            renewals_to_table=args.renewals_to == "table",
        )
    )


if __name__ == "__main__":
    main()
