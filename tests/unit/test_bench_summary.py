"""What `havip bench all` prints and writes: the machine line, the targets table, a headline per bench."""

from __future__ import annotations

import json

from services.dev.bench_machine import Machine, cpu_model, memory_bytes, postgres_version
from services.dev.bench_summary import (
    AllRun,
    BenchOutcome,
    BenchStatus,
    format_value,
    headline,
    tally,
    targets_markdown,
    targets_table,
)
from services.dev.bench_targets import judge_all
from tests.bench_tools import ALL, COLDSTART, FAILOVER, INTAKE, LOOKUPS, MAPPING, watch_results

MACHINE = Machine(2, "AMD EPYC", 24 * 2**30, "3.11.7", "tansu 0.6.0", "PostgreSQL 18.6", "c1953ec")


def test_cpu_model_and_memory_from_proc() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC  7B13\nprocessor\t: 1\n"
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_model("processor : 0\nHardware : BCM2835\n") == "BCM2835"
    assert cpu_model("") == "unknown"
    assert memory_bytes("MemTotal:       24637440 kB\nMemFree:  1 kB\n") == 24637440 * 1024
    assert memory_bytes("") is None
    assert postgres_version("postgres (PostgreSQL) 18.6") == "PostgreSQL 18.6"


def test_machine_line() -> None:
    assert MACHINE.line() == (
        "2 CPUs (AMD EPYC), 24.0 GiB memory, Python 3.11.7, broker tansu 0.6.0, PostgreSQL 18.6, commit c1953ec"
    )


def test_values_with_their_units() -> None:
    assert format_value(12.34, "ms") == "12.3 ms"
    assert format_value(2443.2, "/s") == "2,443/s"
    assert format_value(1.712, "x") == "1.71x"
    assert format_value(900_000.0, "keys/s") == "900,000 keys/s"
    assert format_value(None, "ms") == "-"


def test_targets_table_says_met_missed_and_not_measured() -> None:
    verdicts = judge_all({"failover": FAILOVER})
    text = targets_table(verdicts)
    assert text.splitlines()[0].split() == ["figure", "measured", "target", "met?", "note"]
    idle_p50 = next(line for line in text.splitlines() if line.startswith("convergence idle, p50"))
    assert "8 ms" in idle_p50 and "<= 10 ms" in idle_p50 and " yes " in idle_p50
    idle_p99 = next(line for line in text.splitlines() if line.startswith("convergence idle, p99"))
    assert " NO " in idle_p99
    assert text.count("not measured") == 13  # every target but failover's three
    assert tally(verdicts) == "2 met, 1 missed, 13 not measured. Missed: convergence idle, p99."


def test_targets_markdown_is_one_row_a_target() -> None:
    lines = targets_markdown(judge_all(ALL)).splitlines()
    assert lines[:2] == ["| figure | measured | target | met? | note |", "|---|---|---|---|---|"]
    assert len(lines) == 2 + 16
    assert lines[2] == "| convergence idle, p50 | 8 ms | <= 10 ms | yes | 1,000 failovers |"


def _passed(name: str, results: dict[str, object]) -> BenchOutcome:
    return BenchOutcome(name, [], BenchStatus.PASSED, 0, results=results)


def test_a_headline_per_bench() -> None:
    assert headline(_passed("failover", FAILOVER)) == (
        "10,000 HAVIPs; idle: 1,000 failovers, p50 8 / p99 30.0 / max 41.0 ms;"
        " loaded: 1,000 failovers, p50 20.0 / p99 45.0 / max 60.0 ms, background sent 362 reports/s"
        " + 1,808 renewals/s (asked 1,000 + 5,000), mapping backlog 10 -> 20"
    )
    assert headline(_passed("mapping", MAPPING)) == (
        "10,000 HAVIPs, 60 s each; renewals 24,000/s median (23,000/s mean), producer the limit 3 s;"
        " state changes 495/s median (480/s mean), producer the limit 0 s"
    )
    assert "fwd-single 21,000 req/s, p50 1 / p99 6 / max 12.0 ms" in headline(_passed("lookups", LOOKUPS))
    assert "forwarder vs pg-http 7x" in headline(_passed("lookups", LOOKUPS))
    assert headline(_passed("watch", watch_results())).startswith("1,000 watchers, 2 changes; applied -> last")
    assert headline(_passed("coldstart", COLDSTART)).startswith("0 HAVIPs: ready in 1.1 s, RSS 63 MiB; 100,000")
    assert headline(_passed("intake", INTAKE)) == (
        "2,800 reports/s accepted, p50 1 / p99 15.0 / max 30.0 ms, 7 non-2xx (500 agent tokens, 32 connections)"
    )


def test_a_failed_bench_shows_its_exit_code_and_last_line() -> None:
    failed = BenchOutcome("failover", [], BenchStatus.FAILED, 1, tail=["...", "RuntimeError: forwarder exited", ""])
    assert headline(failed) == "failed with exit code 1: RuntimeError: forwarder exited"
    assert headline(BenchOutcome("intake", [])) == "not run"
    log = [
        "Traceback (most recent call last):",
        "RuntimeError: forwarder exited with 3:",
        "2026 ... shutdown complete.",
    ]
    assert headline(BenchOutcome("failover", [], BenchStatus.FAILED, 1, tail=log)).endswith(
        ": RuntimeError: forwarder exited with 3:"
    )
    assert headline(BenchOutcome("intake", [], BenchStatus.FAILED, -9)) == "failed with exit code -9"


def test_results_of_another_shape_do_not_lose_the_summary() -> None:
    assert headline(_passed("mapping", {"phases": []})).startswith("results.json not understood (KeyError(")


def test_summary_json_and_markdown_of_a_run_with_a_failed_bench() -> None:
    failed = BenchOutcome(
        "failover",
        ["--rounds", "20"],
        BenchStatus.FAILED,
        1,
        "2026-12-05T00:33:03+00:00",
        "2026-12-05T00:33:10+00:00",
        7.0,
        (1.2, 1.3, 1.1),
        (1.4, 1.3, 1.1),
        "/tmp/x/failover/output.log",
        ["RuntimeError: forwarder exited with 3"],
    )
    outcomes = [failed, _passed("intake", INTAKE)]
    verdicts = judge_all({o.name: o.results for o in outcomes})
    run = AllRun(MACHINE, True, "2026-12-05T00:33:03+00:00", "2026-12-05T00:45:00+00:00", outcomes, verdicts)
    data = json.loads(json.dumps(run.as_dict()))
    assert data["benches"]["failover"]["status"] == "failed"
    assert data["benches"]["failover"]["command"] == "havip bench failover --rounds 20"
    assert data["benches"]["failover"]["tail"] == ["RuntimeError: forwarder exited with 3"]
    assert data["machine"]["cpus"] == 2 and data["quick"] is True
    idle = next(t for t in data["targets"] if t["figure"] == "convergence idle, p50")
    assert (idle["value"], idle["met"]) == (None, None)
    intake = next(t for t in data["targets"] if t["figure"] == "gateway report intake, p99")
    assert (intake["value"], intake["threshold"], intake["comparison"], intake["met"]) == (15.0, 20, "<=", True)

    text = run.markdown()
    assert text.startswith("### `havip bench all`, 2026-12-05 00:33 UTC, commit c1953ec\n")
    assert "Machine: 2 CPUs (AMD EPYC)" in text and "`--quick`" in text
    assert "- **failover** (failed, 0.1 min, load average 1.2 -> 1.4, `havip bench failover --rounds 20`):" in text
    assert "failed with exit code 1: RuntimeError: forwarder exited with 3" in text
