"""The observer's outbox: reports reach the broker in the order they were seen, through any outage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaConnectionError

from schemas import topics
from schemas.messages import ReportSource, VrrpReported, VrrpState
from services.observe.outbox import ReportOutbox

SEEN = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def report(seq: int, state: VrrpState = VrrpState.MASTER) -> VrrpReported:
    return VrrpReported(
        havip_id="hv-1",
        tenant_id="t-1",
        instance_id="i-1",
        state=state,
        priority=100 if state is VrrpState.MASTER else 0,
        seq=seq,
        reported_at=SEEN,
        received_at=SEEN,
        lease_seconds=15.0 if state is VrrpState.MASTER else None,
        source=ReportSource.OBSERVER,
    )


class Broker:
    """A producer whose broker is away for the first `outage` sends."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.log: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.outage > 0:
            self.outage -= 1
            done.set_exception(KafkaConnectionError("the broker is away"))
        else:
            assert key is not None and value is not None
            self.log.append((topic, key, value))
            done.set_result(None)
        return done


async def delivered(broker: Broker, reports: list[VrrpReported], count: int) -> list[int]:
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        await asyncio.sleep(0)

    outbox = ReportOutbox(broker, "vrrp.events", sleep=nap)
    for item in reports:
        outbox.put(item)
    task = asyncio.create_task(outbox.run())
    for _ in range(1000):
        if len(broker.log) >= count:
            break
        await asyncio.sleep(0)
    task.cancel()
    assert outbox.waiting() == 0
    return [topics.VRRP.parse(value).seq for _, _, value in broker.log]


async def test_reports_go_out_in_the_order_they_were_seen() -> None:
    broker = Broker(outage=0)
    assert await delivered(broker, [report(1), report(2), report(3, VrrpState.STOP)], 3) == [1, 2, 3]


async def test_a_broker_outage_loses_nothing_and_keeps_the_order() -> None:
    broker = Broker(outage=4)
    seqs = await delivered(broker, [report(1), report(2), report(3, VrrpState.STOP)], 3)
    # Sent again from the first not taken; a report taken twice is a replay, stale at the mapping service.
    assert sorted(set(seqs)) == [1, 2, 3]
    assert seqs[-3:] == [1, 2, 3]
