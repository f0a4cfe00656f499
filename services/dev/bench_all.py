"""`havip bench all`: issue 8's six benches one after the other, then one table against its targets.

Each bench runs as its own child process (`python -m services.cli bench NAME
--out DIR/NAME ...`), so each starts its own fresh stack, and a bench that
crashes or hangs on to memory cannot take the ones after it down. Its output
streams to the terminal and to DIR/NAME/output.log as it runs; a bench that
fails is recorded with its exit code and the last lines of its log, and the
rest still run. At the end DIR/summary.json holds the machine, every bench's
status, and every target's value and verdict; DIR/summary.md is the same as a
Markdown section for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.dev.bench_machine import describe_machine
from services.dev.bench_summary import AllRun, BenchOutcome, BenchStatus, headline, tally, targets_table
from services.dev.bench_targets import judge_all
from services.dev.benchkit import format_table, write_json

TAIL_LINES = 20


@dataclass(frozen=True)
class PlannedBench:
    name: str
    full: tuple[str, ...]  # the parameters, spelled out where the issue names them
    quick: tuple[str, ...]  # a smoke run of a minute or so: proves it runs, measures nothing worth quoting


PLAN: tuple[PlannedBench, ...] = (
    PlannedBench(
        "failover",
        ("--rounds", "1000", "--havips", "10000", "--reports-per-second", "1000", "--renewals-per-second", "5000"),
        ("--rounds", "20", "--havips", "500", "--reports-per-second", "20", "--renewals-per-second", "100"),
    ),
    PlannedBench("mapping", ("--seconds", "60"), ("--seconds", "3", "--havips", "500")),
    PlannedBench("lookups", (), ("--havips", "500", "--seconds", "2")),
    PlannedBench("watch", ("--watchers", "1000"), ("--watchers", "20", "--changes", "10", "--havips", "500")),
    PlannedBench("coldstart", ("--sizes", "100000,1000000"), ("--sizes", "1000", "--starts", "1")),
    PlannedBench("intake", (), ("--seconds", "2", "--agents", "20")),
)


def run_all_benches(out_dir: Path, *, quick: bool) -> int:
    """0 when every bench ran to the end (whatever the targets say), 1 when one failed, 130 on Ctrl-C."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = _now()
    machine = describe_machine()
    print(f"machine: {machine.line()}", flush=True)
    outcomes = [BenchOutcome(bench.name, list(bench.quick if quick else bench.full)) for bench in PLAN]
    interrupted = False
    try:
        for number, outcome in enumerate(outcomes, 1):
            print(f"\n=== {number}/{len(outcomes)}: {outcome.command_line()} ===", flush=True)
            _run(outcome, out_dir / outcome.name)
    except KeyboardInterrupt:
        # The bench had the Ctrl-C too and has stopped its stack; summarise what ran.
        interrupted = True
        print("\ninterrupted: the benches not yet run are left out", flush=True)
    verdicts = judge_all({outcome.name: outcome.results for outcome in outcomes})
    run = AllRun(machine, quick, started, _now(), outcomes, verdicts)
    summary_json = write_json(out_dir, run.as_dict(), "summary.json")
    summary_md = out_dir / "summary.md"
    summary_md.write_text(run.markdown())
    _report(run)
    print(f"\nwrote {summary_json}\n      {summary_md}")
    if interrupted:
        return 130
    return 0 if all(outcome.status is BenchStatus.PASSED for outcome in outcomes) else 1


def _run(outcome: BenchOutcome, bench_dir: Path) -> None:
    bench_dir.mkdir(parents=True, exist_ok=True)
    results = bench_dir / "results.json"
    results.unlink(missing_ok=True)  # one left by an earlier run in this folder must not pass for this run's
    log = bench_dir / "output.log"
    command = [sys.executable, "-m", "services.cli", "bench", outcome.name, "--out", str(bench_dir)]
    command += outcome.arguments
    tail: deque[bytes] = deque(maxlen=TAIL_LINES)
    outcome.log, outcome.started, outcome.load_before = str(log), _now(), _load_average()
    began = time.monotonic()
    # Unbuffered: a Python child writing to a pipe would otherwise hold its lines until it ends.
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with (
        open(log, "wb") as sink,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as child,
    ):
        assert child.stdout is not None
        try:
            for line in child.stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
                sink.write(line)
                tail.append(line)
        finally:
            # On Ctrl-C as well: wait for the child to stop its stack, and record how it ended
            # (failed until its results are read: an interrupted bench is not a passed one).
            outcome.exit_code = child.wait()
            outcome.seconds = time.monotonic() - began
            outcome.ended, outcome.load_after = _now(), _load_average()
            outcome.status = BenchStatus.FAILED
            outcome.tail = [line.decode(errors="replace").rstrip() for line in tail]
    outcome.results = _read_results(results) if outcome.exit_code == 0 else None
    if outcome.results is not None:
        outcome.status, outcome.tail = BenchStatus.PASSED, []
        return
    if outcome.exit_code == 0:
        outcome.tail.append(f"(exit code 0, but no readable {results})")
    print(f"\n{outcome.name} FAILED (exit code {outcome.exit_code}); its log: {log}", flush=True)


def _read_results(path: Path) -> dict[str, object] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _report(run: AllRun) -> None:
    rows = []
    for outcome in run.outcomes:
        before, after = outcome.load_before, outcome.load_after
        rows.append(
            [
                outcome.name,
                outcome.status.value,
                outcome.exit_code,
                outcome.seconds / 60 if outcome.status is not BenchStatus.NOT_RUN else None,
                before[0] if before else None,
                after[0] if after else None,
            ]
        )
    print(f"\n=== havip bench all{' --quick' if run.quick else ''}: {run.machine.line()}")
    print(format_table(["bench", "status", "exit", "minutes", "load before", "load after"], rows))
    print()
    for outcome in run.outcomes:
        print(f"{outcome.name}: {headline(outcome)}")
    scale = "--quick: tiny parameters, not the issue's" if run.quick else "the issue's parameters"
    print(f"\ntargets (issue 8, for a 2-core machine with the embedded broker; measured with {scale}):")
    print(targets_table(run.verdicts))
    print(tally(run.verdicts))


def _load_average() -> tuple[float, float, float]:
    one, five, fifteen = (round(load, 2) for load in os.getloadavg())  # the kernel's own precision, about
    return one, five, fifteen


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
