"""Issue 8's targets read from results shaped as each bench's write_json writes them, and judged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from services.dev.bench_targets import TARGETS, Comparison, Reading, Target, judge, judge_all
from tests.bench_tools import ALL, COLDSTART, FAILOVER, MAPPING


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


def _value(results: Mapping[str, Any]) -> Reading:
    return Reading(results["v"])


def test_a_threshold_met_exactly_is_met() -> None:
    at_most = Target("x", "b", _value, Comparison.AT_MOST, 10, "ms")
    at_least = Target("y", "b", _value, Comparison.AT_LEAST, 10, "/s")
    assert judge(at_most, {"v": 10.0}).met is True
    assert judge(at_least, {"v": 10.0}).met is True
    assert judge(at_most, {"v": 10.5}).met is False
    assert judge(at_least, {"v": 9.5}).met is False
