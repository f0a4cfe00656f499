"""What `havip bench all` reports: the targets table, a headline per bench, summary.json and summary.md.

Pure (tests/unit/test_bench_summary.py): the run's outcomes and verdicts in,
text and a dict out; services/dev/bench_all.py runs the benches and writes
the files. summary.md is a Markdown section to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.dev.bench_machine import Machine
from services.dev.bench_targets import Target, Verdict, background_load
from services.dev.benchkit import format_number, format_table

LoadAverage = tuple[float, float, float]


class BenchStatus(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_RUN = "not run"  # an earlier bench was interrupted


@dataclass
class BenchOutcome:
    """One bench of the run: how it ended, how long it took, how busy the machine was around it."""

    name: str
    arguments: list[str]  # the bench's own options, --out aside
    status: BenchStatus = BenchStatus.NOT_RUN
    exit_code: int | None = None
    started: str = ""  # ISO 8601, UTC
    ended: str = ""
    seconds: float = 0.0
    load_before: LoadAverage | None = None
    load_after: LoadAverage | None = None
    log: str = ""
    tail: list[str] = field(default_factory=list)  # the log's last lines, kept when it failed
    results: Mapping[str, Any] | None = None  # its results.json, when it passed

    def command_line(self) -> str:
        return " ".join(["havip", "bench", self.name, *self.arguments])

    def as_dict(self) -> dict[str, Any]:
        """For summary.json: everything but the results (they stay in the bench's own results.json)."""
        return {
            "command": self.command_line(),
            "status": self.status.value,
            "exit_code": self.exit_code,
            "started": self.started,
            "ended": self.ended,
            "seconds": self.seconds,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
            "log": self.log,
            "tail": self.tail,
        }


def format_value(value: float | None, unit: str, number: Callable[[float], str] = format_number) -> str:
    if value is None:
        return "-"  # the met? column says "not measured"
    # A rate or a ratio reads as one word (2,443/s, 1.71x); a quantity keeps a space (12.3 ms).
    return f"{number(value)}{unit}" if unit in ("/s", "x") else f"{number(value)} {unit}"


def format_target(target: Target) -> str:
    # A threshold is a round number the issue wrote: 10 ms, 1,000,000 keys/s, not 10.0 ms.
    written = f"{target.threshold:,.0f}" if float(target.threshold).is_integer() else format_number(target.threshold)
    return f"{target.comparison.value} {format_value(target.threshold, target.unit, lambda _: written)}"


_MET = {True: "yes", False: "NO", None: "not measured"}
TABLE_HEADERS = ("figure", "measured", "target", "met?", "note")


def target_rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    return [
        [
            v.target.figure,
            format_value(v.reading.value, v.target.unit),
            format_target(v.target),
            _MET[v.met],
            v.reading.note,
        ]
        for v in verdicts
    ]


def targets_table(verdicts: Sequence[Verdict]) -> str:
    return format_table(TABLE_HEADERS, target_rows(verdicts))


def targets_markdown(verdicts: Sequence[Verdict]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in target_rows(verdicts)]
    return "\n".join(lines)


def tally(verdicts: Sequence[Verdict]) -> str:
    """`3 met, 10 missed, 3 not measured`, and the missed ones by name."""
    counts = {status: sum(v.status == status for v in verdicts) for status in ("met", "missed", "not measured")}
    line = ", ".join(f"{n} {status}" for status, n in counts.items())
    missed = [v.target.figure for v in verdicts if v.met is False]
    return line + (f". Missed: {'; '.join(missed)}." if missed else ".")


def headline(outcome: BenchOutcome) -> str:
    """The bench's figures in a line, or why there are none."""
    if outcome.status is not BenchStatus.PASSED or outcome.results is None:
        if outcome.status is BenchStatus.NOT_RUN:
            return "not run"
        why = _why_it_failed(outcome.tail)
        return f"failed with exit code {outcome.exit_code}" + (f": {why}" if why else "")
    try:
        return HEADLINES[outcome.name](outcome.results)
    except (KeyError, TypeError, ValueError) as exc:
        # Hours of benches must not be lost to a renamed key: the summary is still written.
        return f"results.json not understood ({exc!r}); see the bench's own output"


# A Python exception's last line (`RuntimeError: forwarder exited with 3:`), or SystemExit's message.
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Timeout)\b")


def _why_it_failed(tail: Sequence[str]) -> str:
    """The exception in the log's last lines; else its last line (a service's log follows a traceback)."""
    lines = [line.strip() for line in tail if line.strip()]
    return next((line for line in reversed(lines) if _EXCEPTION.match(line)), lines[-1] if lines else "")


def _ms(spread: Mapping[str, float] | None) -> str:
    if not spread:
        return "no samples"
    p50, p99, top = (format_number(spread[key]) for key in ("p50", "p99", "max"))
    return f"p50 {p50} / p99 {p99} / max {top} ms"


def _failover(r: Mapping[str, Any]) -> str:
    parts = []
    for label, phase in r["phases"].items():
        part = f"{label}: {phase['failovers']:,} failovers, {_ms(phase['convergence_ms'])}"
        if phase.get("stopped"):
            part += " (stopped early)"
        if phase.get("background_load"):
            part += ", " + background_load(phase["background_load"], r["background_asked_per_second"])
        backlog = phase.get("mapping_backlog_at_start_and_end")
        if backlog and None not in backlog:
            part += f", mapping backlog {backlog[0]:,} -> {backlog[1]:,}"
        parts.append(part)
    return f"{r['havips']:,} HAVIPs; " + "; ".join(parts)


def _mapping(r: Mapping[str, Any]) -> str:
    parts = [
        f"{p['name']} {p['median_per_second']:,.0f}/s median ({p['mean_per_second']:,.0f}/s mean),"
        f" producer the limit {p['producer_bound_seconds']} s"
        for p in r["phases"]
    ]
    return f"{r['havips']:,} HAVIPs, {r['seconds']:g} s each; " + "; ".join(parts)


def _lookups(r: Mapping[str, Any]) -> str:
    single, batch = r["fwd_single"], r["fwd_batch"]
    ratio = r["ratios"]["forwarder_single_vs_pg_http"]
    return (
        f"{r['havips']:,} HAVIPs, {r['seconds_each']:g} s each; in-process {r['in_process']['per_second']:,.0f}/s;"
        f" fwd-single {single['per_second']:,.0f} req/s, {_ms(single['latency_ms'])};"
        f" fwd-batch {batch['keys_per_second']:,.0f} keys/s; pg-direct {r['pg_direct']['per_second']:,.0f} queries/s;"
        f" pg-http {r['pg_http']['per_second']:,.0f} req/s;"
        f" forwarder vs pg-http {'-' if ratio is None else format_number(ratio) + 'x'}"
    )


def _watch(r: Mapping[str, Any]) -> str:
    achieved = r.get("achieved_per_second")
    return (
        f"{r['watchers']:,} watchers, {r['changes']:,} changes; applied -> last watcher"
        f" {_ms(r['applied_to_last_watcher_ms'])}; {r['changes_every_watcher_had']} of {r['changes']} changes"
        f" reached every watcher; pace {format_number(achieved) if achieved else '-'}/s of {r['per_second']:g}/s asked"
    )


def _coldstart(r: Mapping[str, Any]) -> str:
    return "; ".join(
        f"{row['havips']:,} HAVIPs: ready in {format_number(row['ready_seconds'])} s,"
        f" RSS {row['rss_bytes'] / 2**20:,.0f} MiB"
        for row in r["sizes"]
    )


def _intake(r: Mapping[str, Any]) -> str:
    wrk = r["wrk"]
    return (
        f"{r['accepted_per_second']:,.0f} reports/s accepted, {_ms(wrk['latency_ms'])}, {wrk['non_2xx']:,} non-2xx"
        f" ({r['agents']:,} agent tokens, {r['connections']} connections)"
    )


HEADLINES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "failover": _failover,
    "mapping": _mapping,
    "lookups": _lookups,
    "watch": _watch,
    "coldstart": _coldstart,
    "intake": _intake,
}


@dataclass(frozen=True)
class AllRun:
    """The whole `havip bench all` run, as summary.json and summary.md describe it."""

    machine: Machine
    quick: bool
    started: str
    ended: str
    outcomes: Sequence[BenchOutcome]
    verdicts: Sequence[Verdict]

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine.as_dict(),
            "quick": self.quick,
            "started": self.started,
            "ended": self.ended,
            "benches": {outcome.name: outcome.as_dict() for outcome in self.outcomes},
            "targets": [
                {
                    "figure": v.target.figure,
                    "bench": v.target.bench,
                    "value": v.reading.value,
                    "unit": v.target.unit,
                    "comparison": v.target.comparison.value,
                    "threshold": v.target.threshold,
                    "met": v.met,
                    "note": v.reading.note,
                }
                for v in self.verdicts
            ],
        }

    def markdown(self) -> str:
        size = "`--quick`: tiny parameters, a smoke run, not the issue's" if self.quick else "the issue's parameters"
        lines = [
            f"### `havip bench all`, {self.started[:16].replace('T', ' ')} UTC, commit {self.machine.commit}",
            "",
            f"Machine: {self.machine.line()}. Run with {size}; {self.started[11:16]} to {self.ended[11:16]} UTC.",
            "",
            targets_markdown(self.verdicts),
            "",
            tally(self.verdicts),
            "",
        ]
        for outcome in self.outcomes:
            lines.append(f"- **{outcome.name}** ({_how_it_ran(outcome)}): {headline(outcome)}")
        return "\n".join(lines) + "\n"


def _how_it_ran(outcome: BenchOutcome) -> str:
    if outcome.status is BenchStatus.NOT_RUN:
        return "not run"
    load = ""
    if outcome.load_before and outcome.load_after:
        load = f", load average {outcome.load_before[0]:.1f} -> {outcome.load_after[0]:.1f}"
    return f"{outcome.status.value}, {outcome.seconds / 60:.1f} min{load}, `{outcome.command_line()}`"
