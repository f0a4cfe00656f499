"""What the renewals, recovery, rebalance and keepalived benches write to results.json and print."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from services.dev.bench_keepalived import Results, _print_summary, keepalived_results
from services.dev.bench_rebalance import SCENARIOS, Figures, Profile, rebalance_results
from services.dev.bench_recovery import LIMIT_SECONDS, recovery_results
from services.dev.bench_renewals import renewal_results
from services.dev.benchkit import write_json
from services.dev.keepalived_failover import FailoverTiming


def test_a_renewal_is_priced_in_state_changes() -> None:
    results = renewal_results(100, 1000, 50, renewals_per_second=4000.0, changes_per_second=1000.0)
    assert results["renewal_cost_in_changes"] == 0.25
    assert (results["havips"], results["renewals"], results["changes"]) == (100, 1000, 50)


def test_what_never_recovered_is_null_in_the_json(tmp_path: Path) -> None:
    results = recovery_results(2, {"gateway 202": [1.5, 2.5], "forwarder caught up": [3.0, math.inf]})
    assert results["seconds"] == {"gateway 202": [1.5, 2.5], "forwarder caught up": [3.0, None]}
    assert results["limit_seconds"] == LIMIT_SECONDS
    # Strict JSON: no Infinity a reader outside Python would refuse.
    assert "Infinity" not in write_json(tmp_path, results).read_text()


def test_rebalance_results_name_each_profile_and_a_group_that_never_settled() -> None:
    before, static = Profile("before", 6.0, 1.0), Profile("static", 10.0, 2.0, static=True)
    figures: Figures = dict.fromkeys(SCENARIOS, [1.0, 2.0])
    results = rebalance_results([(before, figures), (static, {**figures, "takeover": None})], rounds=2)
    first, second = results["profiles"]
    assert first == {"name": "before", "session_timeout": 6.0, "heartbeat_interval": 1.0, "static": False} | {
        "seconds": figures
    }
    assert second["static"] and second["seconds"]["takeover"] is None
    assert set(results["scenarios"]) == set(SCENARIOS)


def _keepalived_run() -> Results:
    results = Results()
    for keepalived, platform in [(1.0, 0.020), (1.2, 0.040), (1.1, -0.005)]:
        results.timings.append(FailoverTiming("node killed", keepalived, platform))
    results.timings.append(FailoverTiming("graceful stop", 0.1, 0.010))
    results.checks["split brain: traffic stayed on n1"] += [True, False]
    return results


def test_keepalived_results_count_a_forwarder_ahead_of_the_advert_apart() -> None:
    summary = keepalived_results(_keepalived_run(), rounds=3, source="observer")
    killed = summary["scenarios"]["node killed"]
    assert killed["ahead"] == 1
    assert killed["keepalived_ms"]["count"] == 3
    assert killed["heard_to_forwarder_ms"]["count"] == 2
    assert killed["heard_to_forwarder_ms"]["max"] == pytest.approx(40.0)
    # A graceful stop is no takeover.
    assert summary["all_takeovers_heard_to_forwarder_ms"]["count"] == 2
    assert summary["checks"] == {"split brain: traffic stayed on n1": {"held": 1, "of": 2}}
    json.dumps(summary)


def test_keepalived_table_has_a_row_per_scenario_and_one_for_all_takeovers(capsys: pytest.CaptureFixture[str]) -> None:
    _print_summary(keepalived_results(_keepalived_run(), rounds=3, source="agent"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["scenario", "n"]
    assert [line.split()[0] for line in lines[3:6]] == ["node", "graceful", "all"]
    assert lines[-1] == "split brain: traffic stayed on n1: held 1 of 2"
