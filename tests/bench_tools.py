"""Bench results shaped exactly as each `havip bench` writes its results.json, for the bench-all tests.

Hand-written where the bench builds its dict inside its I/O; built by the
bench's own pure code where it has some (WrkRun.as_dict, the watch bench's
summarise), so a renamed key there shows here.
"""

from __future__ import annotations

from typing import Any

from services.dev.bench_wrk import WrkRun
from services.dev.benchkit import Spread
from services.dev.watch_delays import ProducedChange, change_delays, per_watcher_ms, summarise


def spread_dict(p50: float, p99: float, top: float, count: int = 100) -> dict[str, float]:
    return Spread(count, p50, p99, top).as_dict()


def wrk_dict(per_second: float, p99_ms: float, non_2xx: int = 0) -> dict[str, Any]:
    """A 10 s wrk run as WrkRun.as_dict writes it: p50 1 ms, max twice the p99, refusals counted as 429s."""
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
            "convergence_ms": spread_dict(8.0, 30.0, 41.0),
            "stopped": "",
            "background_load": None,
            "mapping_backlog_at_start_and_end": None,
            "samples_ms": [8.0],
        },
        "loaded": {
            "failovers": 1000,
            "convergence_ms": spread_dict(20.0, 45.0, 60.0),
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
    "in_process": {"lookups": 1, "per_second": 1e6, "latency_us": spread_dict(0.7, 5.0, 30.0)},
    "fwd_single": wrk_dict(21_000.0, 6.0),
    "fwd_batch": wrk_dict(900.0, 50.0) | {"keys_per_request": 1000, "keys_per_second": 900_000.0},
    "pg_direct": {
        "queries": 1,
        "seconds": 10.0,
        "per_second": 3600.0,
        "latency_ms": spread_dict(7, 30, 90),
        "misses": 0,
    },
    "pg_http": wrk_dict(3000.0, 20.0),
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
    "wrk": wrk_dict(3000.0, 15.0, non_2xx=7),
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


def watch_results(watchers: int = 1000) -> dict[str, Any]:
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
    "watch": watch_results(),
    "coldstart": COLDSTART,
    "intake": INTAKE,
}
