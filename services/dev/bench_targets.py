"""Issue 8's targets for `havip bench`, as data, and the judgement of one run against them.

Each target names the bench that measures it and how to read its figure from
that bench's `results.json` (the keys its `write_json` call writes). Pure
(tests/unit/test_bench_targets.py): results come in as dicts, verdicts go out.
A bench that failed, did not run, or wrote no such figure is "not measured",
never met; a phase that stopped before its last round is judged missed,
whatever its percentiles say, because the round that stopped it is not in them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Results = Mapping[str, Any]  # one bench's results.json


class Comparison(enum.Enum):
    AT_MOST = "<="
    AT_LEAST = ">="

    def holds(self, value: float, threshold: float) -> bool:
        return value <= threshold if self is Comparison.AT_MOST else value >= threshold


@dataclass(frozen=True)
class Reading:
    """A figure read from a bench's results: None when the results do not hold it."""

    value: float | None
    note: str = ""  # what a reader needs beside the number (what the load really was, how much ran)
    stopped_early: bool = False  # the run ended before all its rounds: never judged met


NOT_MEASURED = Reading(None)


@dataclass(frozen=True)
class Target:
    figure: str
    bench: str
    read: Callable[[Results], Reading]
    comparison: Comparison
    threshold: float
    unit: str


@dataclass(frozen=True)
class Verdict:
    target: Target
    reading: Reading
    met: bool | None  # None: not measured

    @property
    def status(self) -> str:
        return {True: "met", False: "missed", None: "not measured"}[self.met]


def judge(target: Target, results: Results | None) -> Verdict:
    """`results`: the bench's results.json, or None when the bench failed or did not run."""
    reading = target.read(results) if results is not None else NOT_MEASURED
    if reading.value is None:
        return Verdict(target, reading, None)
    met = not reading.stopped_early and target.comparison.holds(reading.value, target.threshold)
    return Verdict(target, reading, met)


def judge_all(results_by_bench: Mapping[str, Results | None], targets: tuple[Target, ...] = ()) -> list[Verdict]:
    """Every target (TARGETS unless given), in order; a bench missing from the mapping is not measured."""
    return [judge(target, results_by_bench.get(target.bench)) for target in targets or TARGETS]


def _dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]...; None as soon as a level is missing or null (a bench that measured nothing)."""
    for key in keys:
        if not isinstance(data, Mapping) or data.get(key) is None:
            return None
        data = data[key]
    return data


def _number(value: Any, scale: float = 1.0) -> float | None:
    return float(value) * scale if isinstance(value, int | float) else None


# failover: {"phases": {"idle"|"loaded": {"convergence_ms": Spread, "stopped": str, "background_load": ...}},
#            "background_asked_per_second": {"reports", "renewals"}}  (services/dev/bench.py, _report)
def _convergence(phase: str, percentile: str) -> Callable[[Results], Reading]:
    def read(results: Results) -> Reading:
        found = _dig(results, "phases", phase)
        if found is None:
            return NOT_MEASURED
        notes = [f"{found.get('failovers', 0):,} failovers"]
        if phase == "loaded":
            notes.append(background_load(found.get("background_load"), results.get("background_asked_per_second")))
        if found.get("stopped"):
            notes.append(found["stopped"].split(":", 1)[0])  # "stopped after 3 rounds"; the why is in its log
        value = _number(_dig(found, "convergence_ms", percentile))
        return Reading(value, "; ".join(notes), stopped_early=bool(found.get("stopped")))

    return read


def background_load(sent: Mapping[str, float] | None, asked: Mapping[str, float] | None) -> str:
    """What the failover bench's load generator sent per second, against what it was asked (it can fall short)."""
    if not sent or not asked:
        return "background load: not reported"
    return (
        f"background sent {sent['reports_per_second']:,.0f} reports/s + {sent['renewals_per_second']:,.0f}"
        f" renewals/s (asked {asked['reports']:,.0f} + {asked['renewals']:,.0f})"
    )


# mapping: {"phases": [{"name": "renewals"|"state changes", "median_per_second", "producer_bound_seconds", ...}]}
def _mapping_median(name: str) -> Callable[[Results], Reading]:
    def read(results: Results) -> Reading:
        phase = next((p for p in results.get("phases") or () if p.get("name") == name), None)
        if phase is None:
            return NOT_MEASURED
        seconds = len(phase.get("per_second") or ())
        if not seconds:  # a run shorter than the warm-up: its median of nothing is 0, not a measurement
            return Reading(None, "no second measured after the warm-up")
        bound = phase.get("producer_bound_seconds") or 0
        note = f"median of {seconds} seconds"
        if bound:
            note += f"; the producer was the limit in {bound} of them"
        return Reading(_number(phase.get("median_per_second")), note)

    return read


# lookups and intake: wrk runs as WrkRun.as_dict (services/dev/bench_wrk.py), e.g. results["fwd_single"]
def _wrk_figure(run: str, *keys: str) -> Callable[[Results], Reading]:
    """The figure at `keys`, noted with the non-2xx answers of the wrk run at `results[run]`."""

    def read(results: Results) -> Reading:
        bad = _dig(results, run, "non_2xx") or 0
        return Reading(_number(_dig(results, *keys)), f"{bad:,} non-2xx answers" if bad else "")

    return read


# watch: summarise() of services/dev/watch_delays.py, flat in results.json
def _watch_p99(results: Results) -> Reading:
    watchers, changes = results.get("watchers"), results.get("changes")
    note = f"{watchers:,} watchers, {changes:,} changes" if watchers is not None and changes is not None else ""
    return Reading(_number(_dig(results, "applied_to_last_watcher_ms", "p99")), note)


# coldstart: {"sizes": [{"havips", "ready_seconds", "rss_bytes", ...}]}, the median start per size
def _coldstart(havips: int, key: str, scale: float = 1.0) -> Callable[[Results], Reading]:
    def read(results: Results) -> Reading:
        row = next((r for r in results.get("sizes") or () if r.get("havips") == havips), None)
        if row is None:
            return NOT_MEASURED
        return Reading(_number(row.get(key), scale), f"median of {len(row.get('starts') or ())} starts")

    return read


_MS, _PER_S = "ms", "/s"
# RSS targets are the "MB" and "GB": decimal, 10**6 and 10**9 bytes.
_MB, _GB = 1e-6, 1e-9

TARGETS: tuple[Target, ...] = (
    Target("convergence idle, p50", "failover", _convergence("idle", "p50"), Comparison.AT_MOST, 10, _MS),
    Target("convergence idle, p99", "failover", _convergence("idle", "p99"), Comparison.AT_MOST, 25, _MS),
    Target(
        "convergence under background load, p99",
        "failover",
        _convergence("loaded", "p99"),
        Comparison.AT_MOST,
        50,
        _MS,
    ),
    Target(
        "state changes applied by one mapping worker",
        "mapping",
        _mapping_median("state changes"),
        Comparison.AT_LEAST,
        5_000,
        _PER_S,
    ),
    Target(
        "renewals absorbed by one mapping worker",
        "mapping",
        _mapping_median("renewals"),
        Comparison.AT_LEAST,
        20_000,
        _PER_S,
    ),
    Target(
        "forwarder HTTP single lookups (32 connections)",
        "lookups",
        _wrk_figure("fwd_single", "fwd_single", "per_second"),
        Comparison.AT_LEAST,
        20_000,
        _PER_S,
    ),
    Target(
        "forwarder HTTP single lookups, p99",
        "lookups",
        _wrk_figure("fwd_single", "fwd_single", "latency_ms", "p99"),
        Comparison.AT_MOST,
        5,
        _MS,
    ),
    Target(
        "forwarder HTTP batch lookups",
        "lookups",
        _wrk_figure("fwd_batch", "fwd_batch", "keys_per_second"),
        Comparison.AT_LEAST,
        1_000_000,
        "keys/s",
    ),
    Target(
        "forwarder vs PostgreSQL behind the same HTTP stack",
        "lookups",
        _wrk_figure("fwd_single", "ratios", "forwarder_single_vs_pg_http"),
        Comparison.AT_LEAST,
        5,
        "x",
    ),
    Target("watch: applied -> last watcher, p99", "watch", _watch_p99, Comparison.AT_MOST, 50, _MS),
    Target(
        "gateway report intake, one report a request",
        "intake",
        _wrk_figure("wrk", "accepted_per_second"),
        Comparison.AT_LEAST,
        3_000,
        _PER_S,
    ),
    Target(
        "gateway report intake, p99",
        "intake",
        _wrk_figure("wrk", "wrk", "latency_ms", "p99"),
        Comparison.AT_MOST,
        20,
        _MS,
    ),
    Target(
        "cold start 100,000 HAVIPs, to ready",
        "coldstart",
        _coldstart(100_000, "ready_seconds"),
        Comparison.AT_MOST,
        2,
        "s",
    ),
    Target(
        "cold start 100,000 HAVIPs, RSS",
        "coldstart",
        _coldstart(100_000, "rss_bytes", _MB),
        Comparison.AT_MOST,
        150,
        "MB",
    ),
    Target(
        "cold start 1,000,000 HAVIPs, to ready",
        "coldstart",
        _coldstart(1_000_000, "ready_seconds"),
        Comparison.AT_MOST,
        15,
        "s",
    ),
    Target(
        "cold start 1,000,000 HAVIPs, RSS",
        "coldstart",
        _coldstart(1_000_000, "rss_bytes", _GB),
        Comparison.AT_MOST,
        1,
        "GB",
    ),
)
