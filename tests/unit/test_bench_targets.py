"""Issue 8's targets read from results shaped as each bench's write_json writes them, and judged."""

from __future__ import annotations

from typing import Any

import pytest

from services.dev.bench_targets import TARGETS, Comparison, Reading, Target, judge, judge_all
from services.dev.bench_wrk import WrkRun
from services.dev.benchkit import Spread
from services.dev.watch_delays import ProducedChange, change_delays, per_watcher_ms, summarise


def _spread(p50: float, p99: float, top: float, count: int = 100) -> dict[str, float]:
    return Spread(count, p50, p99, top).as_dict()


def _wrk(per_second: float, p99_ms: float, non_2xx: int = 0) -> dict[str, Any]:
    statuses = {202: int(per_second * 10) - non_2xx, 429: non_2xx} if non_2xx else {}
    run = WrkRun(int(per_second * 10), 10.0, Spread(int(per_second * 10), 1.0, p99_ms, 2 * p99_ms), [], {}, statuses)
    return run.as_dict()


# services/dev/bench.py, _report
FAILOVER: dict[str, Any] = {
    "havips": 10_000,
    "background_asked_per_second": {"reports": 1000.0, "renewals": 5000.0},
    "phases": {
        "idle": {
            "failovers": 1000,
            "convergence_ms": _spread(8.0, 30.0, 41.0),
            "stopped": "",
            "background_load": None,
            "mapping_backlog_at_start_and_end": None,
            "samples_ms": [8.0],
        },
        "loaded": {
            "failovers": 1000,
            "convergence_ms": _spread(20.0, 45.0, 60.0),
            "stopped": "",
            "background_load": {"reports_per_second": 362.0, "renewals_per_second": 1808.0, "seconds": 40.0},
            "mapping_backlog_at_start_and_end": [10, 20],
            "samples_ms": [20.0],
        },
    },
}
# services/dev/bench_mapping.py, mapping_results
MAPPING: dict[str, Any] = {
    "havips": 10_000,
    "seconds": 60.0,
    "phases": [
        {"name": "renewals", "median_per_second": 24_000.0, "mean_per_second": 23_000.0, "per_second": [1.0] * 60,
         "produced": 1, "applied": 1, "producer_bound_seconds": 3, "batches": 1, "batch_seconds": 1.0},
        {"name": "state changes", "median_per_second": 495.0, "mean_per_second": 480.0, "per_second": [1.0] * 60,
         "produced": 1, "applied": 1, "producer_bound_seconds": 0, "batches": 1, "batch_seconds": 1.0},
    ],
}  # fmt: skip
# services/dev/bench_lookups.py, run_lookups_bench and _ratios
LOOKUPS: dict[str, Any] = {
    "havips": 10_000,
    "seconds_each": 10.0,
    "in_process": {"lookups": 1, "per_second": 1e6, "latency_us": _spread(0.7, 5.0, 30.0)},
    "fwd_single": _wrk(21_000.0, 6.0),
    "fwd_batch": _wrk(900.0, 50.0) | {"keys_per_request": 1000, "keys_per_second": 900_000.0},
    "pg_direct": {"queries": 1, "seconds": 10.0, "per_second": 3600.0, "latency_ms": _spread(7, 30, 90), "misses": 0},
    "pg_http": _wrk(3000.0, 20.0),
    "pg_plan": ["Index Scan using havips_vpc_ip on havips h"],
    "ratios": {"forwarder_single_vs_pg_http": 7.0, "forwarder_single_vs_pg_direct": 5.8},
}
# services/dev/bench_intake.py, _report
INTAKE: dict[str, Any] = {
    "agents": 500,
    "connections": 32,
    "accepted_per_second": 2800.0,
    "agent_rate_limit": {"per_second": 50.0, "burst": 100},
    "requests_per_token_per_second": 6.0,
    "wrk": _wrk(3000.0, 15.0, non_2xx=7),
}
# services/dev/bench_coldstart.py, _report: the median start per size, the first row an empty table
COLDSTART: dict[str, Any] = {
    "sizes": [
        {"havips": 0, "seed_seconds": 0.0, "ready_seconds": 1.1, "rss_bytes": 63 * 2**20, "table_havips": 0,
         "starts": [{}] * 3, "rss_bytes_per_havip_over_empty": None},
        {"havips": 100_000, "seed_seconds": 9.9, "ready_seconds": 1.9, "rss_bytes": 151_000_000,
         "table_havips": 100_000, "starts": [{}] * 3, "rss_bytes_per_havip_over_empty": 900.0},
        {"havips": 1_000_000, "seed_seconds": 149.0, "ready_seconds": 16.0, "rss_bytes": 900_000_000,
         "table_havips": 1_000_000, "starts": [{}] * 3, "rss_bytes_per_havip_over_empty": 840.0},
    ]
}  # fmt: skip


def _watch_results(watchers: int = 1000) -> dict[str, Any]:
    """Built by the watch bench's own summarise(), then as _report adds to it."""
    produced = [ProducedChange(("havip-1", 7), 100.0, 100.010), ProducedChange(("havip-2", 8), 101.0, None)]
    receipts = {("havip-1", 7): [100.012, 100.070], ("havip-2", 8): [101.020]}
    delays = change_delays(produced, receipts, watchers)
    summary = summarise(delays, per_watcher_ms(produced, receipts), watchers)
    return {"havips": 10_000, "per_second": 20.0, "client_processes": 2, "achieved_per_second": 14.2, **summary}


ALL = {
    "failover": FAILOVER,
    "mapping": MAPPING,
    "lookups": LOOKUPS,
    "watch": _watch_results(),
    "coldstart": COLDSTART,
    "intake": INTAKE,
}


def _verdicts(results: dict[str, Any]) -> dict[str, tuple[float | None, bool | None]]:
    return {v.target.figure: (v.reading.value, v.met) for v in judge_all(results)}


def test_every_target_reads_its_figure_from_its_bench() -> None:
    found = _verdicts(ALL)
    assert found == {
        "convergence idle, p50": (8.0, True),
        "convergence idle, p99": (30.0, False),
        "convergence under background load, p99": (45.0, True),
        "state changes applied by one mapping worker": (495.0, False),
        "renewals absorbed by one mapping worker": (24_000.0, True),
        "forwarder HTTP single lookups (32 connections)": (21_000.0, True),
        "forwarder HTTP single lookups, p99": (6.0, False),
        "forwarder HTTP batch lookups": (900_000.0, False),
        "forwarder vs PostgreSQL behind the same HTTP stack": (7.0, True),
        "watch: applied -> last watcher, p99": (pytest.approx(60.0), False),
        "gateway report intake, one report a request": (2800.0, False),
        "gateway report intake, p99": (15.0, True),
        "cold start 100,000 HAVIPs, to ready": (1.9, True),
        "cold start 100,000 HAVIPs, RSS": (pytest.approx(151.0), False),
        "cold start 1,000,000 HAVIPs, to ready": (16.0, False),
        "cold start 1,000,000 HAVIPs, RSS": (pytest.approx(0.9), True),
    }


def test_every_target_names_a_bench_of_bench_all() -> None:
    from services.dev.bench_all import PLAN

    assert {t.bench for t in TARGETS} == {bench.name for bench in PLAN}


def test_a_failed_or_missing_bench_is_not_measured_never_met() -> None:
    for verdict in judge_all({"failover": FAILOVER, "mapping": None}):
        if verdict.target.bench == "failover":
            assert verdict.met is not None
        else:
            assert (verdict.reading.value, verdict.met, verdict.status) == (None, None, "not measured")


def test_a_size_the_run_did_not_start_is_not_measured() -> None:
    quick = {"sizes": [COLDSTART["sizes"][0] | {"havips": 1000}]}
    for verdict in judge_all({"coldstart": quick}):
        if verdict.target.bench == "coldstart":
            assert verdict.met is None


def test_a_phase_with_no_samples_is_not_measured() -> None:
    nothing = {**FAILOVER, "phases": {**FAILOVER["phases"], "idle": {**FAILOVER["phases"]["idle"]}}}
    nothing["phases"]["idle"]["convergence_ms"] = None
    assert _verdicts({"failover": nothing})["convergence idle, p50"] == (None, None)


def test_a_phase_that_stopped_early_is_missed_whatever_its_percentiles() -> None:
    loaded = {**FAILOVER["phases"]["loaded"], "failovers": 3, "stopped": "stopped after 3 rounds: timed out"}
    results = {**FAILOVER, "phases": {**FAILOVER["phases"], "loaded": loaded}}
    (verdict,) = [v for v in judge_all({"failover": results}) if v.target.figure.startswith("convergence under")]
    assert (verdict.reading.value, verdict.met) == (45.0, False)
    assert verdict.reading.note.endswith("; stopped after 3 rounds")


def test_a_mapping_run_shorter_than_its_warm_up_is_not_measured() -> None:
    phases = [{**phase, "median_per_second": 0.0, "per_second": []} for phase in MAPPING["phases"]]
    found = _verdicts({"mapping": {**MAPPING, "phases": phases}})
    assert found["renewals absorbed by one mapping worker"] == (None, None)


def test_the_loaded_phase_says_what_background_load_was_sent_and_asked() -> None:
    (verdict,) = [v for v in judge_all({"failover": FAILOVER}) if v.target.figure.startswith("convergence under")]
    assert "background sent 362 reports/s + 1,808 renewals/s (asked 1,000 + 5,000)" in verdict.reading.note


def test_notes_carry_refusals_and_the_size_of_a_run() -> None:
    notes = {v.target.figure: v.reading.note for v in judge_all(ALL)}
    assert notes["gateway report intake, p99"] == "7 non-2xx answers"
    assert notes["forwarder HTTP batch lookups"] == ""
    assert notes["watch: applied -> last watcher, p99"] == "1,000 watchers, 2 changes"
    assert (
        notes["renewals absorbed by one mapping worker"]
        == "median of 60 seconds; the producer was the limit in 3 of them"
    )


def _value(results: dict[str, Any]) -> Reading:
    return Reading(results["v"])


def test_a_threshold_met_exactly_is_met() -> None:
    at_most = Target("x", "b", _value, Comparison.AT_MOST, 10, "ms")
    at_least = Target("y", "b", _value, Comparison.AT_LEAST, 10, "/s")
    assert judge(at_most, {"v": 10.0}).met is True
    assert judge(at_least, {"v": 10.0}).met is True
    assert judge(at_most, {"v": 10.5}).met is False
    assert judge(at_least, {"v": 9.5}).met is False
