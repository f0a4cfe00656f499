"""The pure parts of `havip bench`: percentiles, /metrics figures, progress and table text, wrk's lines and output."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from services.dev.bench_wrk import lua_script, parse_wrk_output, request_line
from services.dev.benchkit import (
    Progress,
    cdf_points,
    default_out_dir,
    format_table,
    metric_sum,
    metric_value,
    percentile,
    progress_line,
    ratio,
    spread,
)


def test_percentiles_are_measured_values_by_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]  # 1 .. 100
    assert percentile(ordered, 0.50) == 50.0
    assert percentile(ordered, 0.99) == 99.0
    assert percentile(ordered, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_refuses_nothing_and_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 0.0)


def test_spread_sorts_its_samples() -> None:
    found = spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (found.count, found.p50, found.p99, found.max) == (5, 3.0, 5.0, 5.0)
    assert found.as_dict() == {"count": 5, "p50": 3.0, "p99": 5.0, "max": 5.0}


def test_cdf_reaches_one_at_the_largest_sample() -> None:
    x, y = cdf_points([3.0, 1.0, 2.0, 2.0])
    assert x == [1.0, 2.0, 2.0, 3.0]
    assert y == [0.25, 0.5, 0.75, 1.0]


def test_ratio_of_nothing_is_none() -> None:
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(10.0, 0.0) is None


def test_progress_line_with_and_without_a_total() -> None:
    assert progress_line("seeding", 500, 1000, 2.0) == "seeding  500/1,000 ( 50%)    2.0s  250/s"
    assert progress_line("reports", 1200, None, 4.0) == "reports  1,200    4.0s  300/s"
    assert progress_line("wrk", 3, 10, 3.0, "s", rate=False) == "wrk  3/10s ( 30%)    3.0s"


def test_progress_in_a_log_prints_whole_lines_and_no_repeat_at_the_end() -> None:
    out = io.StringIO()
    progress = Progress("seeding", 10, out=out)
    progress.update(10)
    progress.finish(10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seeding  10/10 (100%)")
    assert "\r" not in out.getvalue()


def test_table_aligns_text_left_and_numbers_right() -> None:
    table = format_table(["side", "rate", "p50"], [["forwarder", 12345.6, 0.5], ["pg", 812, None]])
    assert table.splitlines() == [
        "side         rate  p50",
        "---------  ------  ---",
        "forwarder  12,346  0.5",
        "pg            812    -",
    ]


def test_a_verdict_reads_yes_or_no_not_one_or_zero() -> None:
    table = format_table(["target", "met?"], [["p99", True], ["backlog", False]])
    assert [line.rstrip() for line in table.splitlines()[2:]] == ["p99      yes", "backlog  no"]


def test_default_out_dir_is_one_folder_per_run() -> None:
    assert default_out_dir("lookups", datetime(2025, 1, 2, 3, 4, 5)) == Path("bench-results/lookups-20250102-030405")


def test_request_line_marks_absent_parts() -> None:
    assert request_line("GET", "/v1/routes?vpc_id=v&ip=10.0.0.1") == "GET\t/v1/routes?vpc_id=v&ip=10.0.0.1\t-\t-"
    assert request_line("POST", "/x", "tok", '{"a":1}') == 'POST\t/x\ttok\t{"a":1}'
    with pytest.raises(ValueError):
        request_line("POST", "/x", body='{"a":\n1}')


def test_lua_counts_statuses_only_when_asked() -> None:
    assert "function response" in lua_script(count_statuses=True)
    assert "function response" not in lua_script(count_statuses=False)
    assert "%" not in lua_script(True).replace("%d", "").replace("%s", "")  # every Lua format survived


def test_parse_wrk_output_reads_the_done_line() -> None:
    data = {
        "requests": 2000,
        "duration_us": 2_000_000,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 3, "timeout": 0},
        "latency_us": {"p50": 1500, "p99": 9000, "max": 20000},
        "quantiles_us": [1000, 1500, 9000],
        "statuses": [{"202": 900}, {"202": 1097, "429": 3}],
    }
    stdout = f"Running 2s test @ http://x\nWRK_JSON {json.dumps(data)}\n"
    run = parse_wrk_output(stdout)
    assert run.per_second == 1000.0
    assert (run.latency_ms.p50, run.latency_ms.p99, run.latency_ms.max) == (1.5, 9.0, 20.0)
    assert run.statuses == {202: 1997, 429: 3}
    assert run.non_2xx() == 3
    assert run.quantiles_ms == [1.0, 1.5, 9.0]


def test_parse_wrk_output_without_a_result_says_what_wrk_printed() -> None:
    with pytest.raises(RuntimeError, match="unable to connect"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_metrics_are_summed_over_matching_labels() -> None:
    text = "\n".join(
        [
            "# HELP havip_observe_frames_total Frames read on the instances' ports",
            "# TYPE havip_observe_frames_total counter",
            'havip_observe_frames_total{kind="vrrp",outcome="claimant"} 1200.0',
            'havip_observe_frames_total{kind="garp",outcome="claimant"} 3.0',
            'havip_observe_frames_total{kind="vrrp",outcome="unexpected"} 2.0',
            "# TYPE havip_observe_ports gauge",
            'havip_observe_ports{state="watched"} 200.0',
            'havip_observe_ports{state="missing"} 0.0',
        ]
    )
    assert metric_sum(text, "havip_observe_frames_total", kind="vrrp", outcome="claimant") == 1200
    assert metric_sum(text, "havip_observe_frames_total") == 1205
    assert metric_sum(text, "havip_observe_ports", state="watched") == 200
    assert metric_sum(text, "havip_observe_reports_total") == 0
    assert metric_value(text, "havip_observe_reports_total") is None
    assert metric_value(text, "havip_observe_ports", state="missing") == 0.0


def test_histogram_parts_and_untyped_lines_are_samples_by_their_own_names() -> None:
    text = "\n".join(
        [
            "# TYPE havip_stream_batch_seconds histogram",
            'havip_stream_batch_seconds_bucket{le="+Inf",service="mapping",topic="vrrp.events"} 4.0',
            'havip_stream_batch_seconds_count{service="mapping",topic="vrrp.events"} 4.0',
            'havip_stream_batch_seconds_sum{service="mapping",topic="vrrp.events"} 0.5',
            'havip_stream_batch_seconds_count{service="quota",topic="quota.commands"} 9.0',
            "havip_forwarder_apply_lag_seconds 0.0123",
            "havip_forwarder_apply_lag_seconds_other 9",
        ]
    )
    assert metric_value(text, "havip_stream_batch_seconds_count", service="mapping") == 4
    assert metric_value(text, "havip_stream_batch_seconds_sum", topic="vrrp.events") == 0.5
    assert metric_value(text, "havip_forwarder_apply_lag_seconds") == 0.0123
    assert metric_value("", "havip_forwarder_apply_lag_seconds") is None


def test_a_table_with_text_last_has_no_trailing_blanks() -> None:
    table = format_table(["reports", "what"], [["renewals", "a long explanation"], ["changes", "short"]])
    assert all(line == line.rstrip() for line in table.splitlines())
    assert table.splitlines()[-1] == "changes   short"
