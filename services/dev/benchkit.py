"""What every `havip bench` shares: percentiles, /metrics figures, a progress line, the result table, JSON and PNGs.

The arithmetic and the text are pure (tests/unit/test_benchkit.py); only
`write_json` and the `plot_*` functions touch the disk, and only the plots
need matplotlib (the optional `bench` extra), imported when one is drawn so
a bench still prints its table where matplotlib is missing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

RESULTS_ROOT = Path("bench-results")


@dataclass(frozen=True)
class Spread:
    """How a set of samples is spread: count, p50, p99 and max, in the samples' unit."""

    count: int
    p50: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of samples sorted ascending: a value that was measured, never interpolated."""
    if not ordered:
        raise ValueError("no samples")
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    rank = math.ceil(fraction * len(ordered))
    return ordered[rank - 1]


def spread(samples: Iterable[float]) -> Spread:
    ordered = sorted(samples)
    return Spread(len(ordered), percentile(ordered, 0.50), percentile(ordered, 0.99), ordered[-1])


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called `name` whose labels include `labels`, in a /metrics text; None if none is."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found) if found else None


def metric_sum(text: str, name: str, **labels: str) -> float:
    """As metric_value, 0 where no sample is: a counter that was never incremented is not exported."""
    return metric_value(text, name, **labels) or 0.0


def cdf_points(samples: Iterable[float]) -> tuple[list[float], list[float]]:
    """x: the samples ascending; y: the share of samples at or below each (the last is 1.0)."""
    ordered = sorted(samples)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]


def ratio(numerator: float, denominator: float) -> float | None:
    """None rather than a division by zero: a side that measured nothing has no ratio."""
    return numerator / denominator if denominator else None


def progress_line(
    label: str, done: float, total: float | None, elapsed: float, unit: str = "", *, rate: bool = True
) -> str:
    """`label  done/total (pct)  elapsed  rate`, for one line rewritten in place."""
    counted = f"{done:,.0f}{unit}" if total is None else f"{done:,.0f}/{total:,.0f}{unit} ({done / total:4.0%})"
    line = f"{label}  {counted}  {elapsed:5.1f}s"
    if rate:
        line += f"  {done / elapsed if elapsed > 0 else 0.0:,.0f}{unit}/s"
    return line


class Progress:
    """A progress line: rewritten in place on a terminal, a line every few seconds in a log."""

    def __init__(
        self, label: str, total: float | None = None, *, unit: str = "", rate: bool = True, out: TextIO | None = None
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.rate = rate
        self._out = out or sys.stdout
        self._tty = self._out.isatty()
        self._started = time.monotonic()
        self._shown = 0.0
        self._last: float | None = None

    def update(self, done: float, *, force: bool = False) -> None:
        now = time.monotonic()
        # A terminal takes ten updates a second; a log file one every five seconds.
        if not force and now - self._shown < (0.1 if self._tty else 5.0):
            return
        self._shown, self._last = now, done
        line = progress_line(self.label, done, self.total, now - self._started, self.unit, rate=self.rate)
        self._out.write(f"\r\x1b[2K{line}" if self._tty else f"{line}\n")
        self._out.flush()

    def finish(self, done: float) -> None:
        if done != self._last:  # a log already has this very line
            self.update(done, force=True)
        if self._tty:
            self._out.write("\n")
            self._out.flush()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: text left-aligned, numbers right-aligned with thousands separators."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [
        all((isinstance(row[i], int | float) and not isinstance(row[i], bool)) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def format_number(value: float) -> str:
    """A measured figure as a table shows it: thousands separators from 100, three significant digits below 10."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):  # a verdict; bool is an int, and would print as 0 or 1
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def default_out_dir(name: str, now: datetime | None = None) -> Path:
    """`bench-results/<name>-<YYYYmmdd-HHMMSS>`: one folder per run, never overwritten by the next."""
    return RESULTS_ROOT / f"{name}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"


def write_json(out_dir: Path, data: Mapping[str, Any], name: str = "results.json") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def plot_latencies(out_dir: Path, name: str, series: Mapping[str, Sequence[float]], unit: str = "ms") -> list[Path]:
    """A histogram and a CDF of each series (one figure each, every series on it); [] without matplotlib."""
    pyplot = _pyplot()
    drawn = {label: values for label, values in series.items() if values}
    if pyplot is None or not drawn:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    histogram, cdf = out_dir / f"{name}-histogram.png", out_dir / f"{name}-cdf.png"

    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    # Up to the p99.9 of all series: one slow outlier must not squash every bar into the first bin.
    everything = sorted(v for values in drawn.values() for v in values)
    upper = percentile(everything, 0.999)
    for label, values in drawn.items():
        axes.hist([v for v in values if v <= upper], bins=60, alpha=0.55, label=label)
    axes.set(xlabel=f"latency ({unit}), up to the p99.9", ylabel="samples", title=f"{name}: latency distribution")
    axes.legend()
    _save(pyplot, figure, histogram)

    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    for label, values in drawn.items():
        x, y = cdf_points(values)
        axes.step(x, y, where="post", label=label)
    axes.set(xlabel=f"latency ({unit}, log scale)", ylabel="share at or below", title=f"{name}: CDF")
    axes.set_xscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    _save(pyplot, figure, cdf)
    return [histogram, cdf]


def plot_bars(out_dir: Path, name: str, labels: Sequence[str], values: Sequence[float], ylabel: str) -> list[Path]:
    """One bar per label (sizes, services); [] without matplotlib."""
    pyplot = _pyplot()
    if pyplot is None or not labels:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    bars = axes.bar(list(labels), list(values))
    axes.bar_label(bars, fmt="%.3g")
    axes.set(ylabel=ylabel, title=name)
    _save(pyplot, figure, path)
    return [path]


def plot_rates(out_dir: Path, name: str, series: Mapping[str, Sequence[float]], ylabel: str) -> list[Path]:
    """Each series as a line over time, one value per second of the measurement; [] without matplotlib.

    For rates sampled once a second: a median hides a rate that sags as a
    backlog or a partition grows, the line shows it.
    """
    pyplot = _pyplot()
    drawn = {label: values for label, values in series.items() if values}
    if pyplot is None or not drawn:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    for label, values in drawn.items():
        axes.plot(range(1, len(values) + 1), values, marker=".", label=label)
    axes.set(xlabel="second of the measurement", ylabel=ylabel, title=name)
    axes.xaxis.get_major_locator().set_params(integer=True)  # whole seconds, even on a short run
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save(pyplot, figure, path)
    return [path]


Line = tuple[Sequence[float], Sequence[float | None]]


def plot_panels(
    out_dir: Path, name: str, title: str, xlabel: str, panels: Sequence[tuple[str, Mapping[str, Line]]]
) -> list[Path]:
    """Panels stacked over one x axis, each with its lines ({label: (xs, ys)}); [] without matplotlib.

    For what a long run does over time: latency in one panel, memory in the next.
    """
    pyplot = _pyplot()
    if pyplot is None or not panels:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    figure, axes_list = pyplot.subplots(len(panels), 1, figsize=(9, 3.5 * len(panels)), sharex=True, squeeze=False)
    for (ylabel, lines), axes in zip(panels, axes_list[:, 0], strict=True):
        for label, (xs, ys) in lines.items():
            axes.plot(list(xs), list(ys), marker="." if len(xs) < 50 else None, label=label)
        axes.set(ylabel=ylabel)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small", ncol=3)
    axes_list[0, 0].set(title=title)
    axes_list[-1, 0].set(xlabel=xlabel)
    _save(pyplot, figure, path)
    return [path]


def _save(pyplot: Any, figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is missing: no PNGs (pip install -e '.[bench]')", flush=True)
        return None
    matplotlib.use("Agg")  # no display: files only
    from matplotlib import pyplot

    return pyplot
