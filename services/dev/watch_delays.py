"""The arithmetic of `havip bench watch`: when each change reached each watcher, reduced to delays.

Pure (tests/unit/test_watch_delays.py): the watch clients hand in receipts
(per change, the time each watcher that had it received it), the bench what
it produced and when the forwarder applied it; nothing here reads a clock or
a socket. Times are wall-clock seconds (`time.time()`) taken by processes on
one machine, so they share a clock and subtract across processes.

A change is named by `(havip_id, version)`: the bench knows both when it
produces the record, and every watch line of a change carries both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.dev.benchkit import Spread, metric_sum, metric_value, spread

ChangeKey = tuple[str, int]  # (havip_id, version)
Receipts = Mapping[ChangeKey, Sequence[float]]

# The forwarder's /metrics samples this bench reads (services/forwarder/metrics.py).
RECORDS_APPLIED = "havip_forwarder_records_applied_total"
APPLY_LAG = "havip_forwarder_apply_lag_seconds"


@dataclass(frozen=True)
class ProducedChange:
    key: ChangeKey
    produced_at: float  # the record's occurred_at, as a timestamp
    applied_at: float | None  # when the forwarder applied it; None when /metrics could not tell


@dataclass(frozen=True)
class ChangeDelay:
    """One change, as every watcher received it (delays in milliseconds)."""

    key: ChangeKey
    dated: bool  # whether the forwarder's apply time is known
    had_it: int  # watchers that received it
    share: float  # of all watchers
    to_last_ms: float | None  # applied -> the last watcher having it: the bench's headline
    produced_to_last_ms: float | None  # the record produced -> the last watcher (adds the broker and the fetch)
    first_to_last_ms: float | None  # the first watcher -> the last: the fan-out alone, no apply time needed


def merge_receipts(parts: Iterable[Iterable[tuple[str, int, Sequence[float]]]]) -> dict[ChangeKey, list[float]]:
    """One mapping of every client process's `[havip_id, version, [times]]` rows."""
    merged: dict[ChangeKey, list[float]] = {}
    for rows in parts:
        for havip_id, version, times in rows:
            merged.setdefault((havip_id, version), []).extend(times)
    return merged


def change_delays(produced: Sequence[ProducedChange], receipts: Receipts, watchers: int) -> list[ChangeDelay]:
    """Per produced change, in the order produced; a change nobody had has no delays, only its share (0)."""
    found = []
    for change in produced:
        times = receipts.get(change.key, ())
        first, last = (min(times), max(times)) if times else (None, None)
        found.append(
            ChangeDelay(
                key=change.key,
                dated=change.applied_at is not None,
                had_it=len(times),
                share=len(times) / watchers if watchers else 0.0,
                to_last_ms=_ms(change.applied_at, last),
                produced_to_last_ms=_ms(change.produced_at, last),
                first_to_last_ms=_ms(first, last),
            )
        )
    return found


def per_watcher_ms(produced: Sequence[ProducedChange], receipts: Receipts) -> list[float]:
    """applied -> received, for every (change, watcher) pair whose apply time is known."""
    return [
        (received - change.applied_at) * 1000
        for change in produced
        if change.applied_at is not None
        for received in receipts.get(change.key, ())
    ]


def applied_position(metrics_text: str) -> tuple[int, float | None]:
    """From the forwarder's /metrics: records applied from the stream so far, and the apply lag of the last one.

    The lag is `applied - occurred_at` of the last record applied: with the counter it
    dates a change exactly when the counter shows that change, and no later one, applied.
    """
    applied = metric_sum(metrics_text, RECORDS_APPLIED, source="stream")
    return int(applied), metric_value(metrics_text, APPLY_LAG)


def summarise(delays: Sequence[ChangeDelay], per_watcher: Sequence[float], watchers: int) -> dict[str, Any]:
    """The figures of a run: spreads in ms, and how many watchers had each change."""
    shares = [d.share for d in delays]
    return {
        "watchers": watchers,
        "changes": len(delays),
        "changes_applied_at_known": sum(d.dated for d in delays),
        "changes_every_watcher_had": sum(d.had_it == watchers for d in delays),
        "share_of_watchers_min": min(shares, default=0.0),
        "share_of_watchers_mean": sum(shares) / len(shares) if shares else 0.0,
        "applied_to_last_watcher_ms": _spread([d.to_last_ms for d in delays]),
        "applied_to_each_watcher_ms": _spread(per_watcher),
        "produced_to_last_watcher_ms": _spread([d.produced_to_last_ms for d in delays]),
        "first_to_last_watcher_ms": _spread([d.first_to_last_ms for d in delays]),
    }


def _ms(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else (end - start) * 1000


def _spread(samples: Iterable[float | None]) -> dict[str, float] | None:
    known = [s for s in samples if s is not None]
    found: Spread | None = spread(known) if known else None
    return found.as_dict() if found else None
