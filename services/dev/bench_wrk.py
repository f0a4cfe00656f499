"""HTTP load from wrk: a Lua script replays prepared requests at random and reports as JSON.

wrk is C and spends microseconds a request, so the server, not the load
generator, is what a run measures (a Python client would saturate first).
The requests are prepared in Python, one a line in a file (`request_line`),
and formatted once per wrk thread at start, so picking one costs a random
number. wrk's `done()` prints one JSON line: totals, errors, the latency
percentiles and 999 quantiles, enough to draw the distribution.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.dev.benchkit import Progress, Spread

_MARK = "WRK_JSON "

_SCRIPT = """
-- Written by services/dev/bench_wrk.py. One request a line: METHOD TAB PATH TAB TOKEN-or-- TAB BODY-or--.
local prepared = {}
local threads = {}
local seeds = 0
statuses = {}

function setup(thread)
  seeds = seeds + 1
  thread:set("seed", seeds)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    local method, target, token, body = line:match("^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t(.*)$")
    local headers = {}
    if token ~= "-" then headers["Authorization"] = "Bearer " .. token end
    if body == "-" then body = nil else headers["Content-Type"] = "application/json" end
    prepared[#prepared + 1] = wrk.format(method, target, headers, body)
  end
  math.randomseed(os.time() * 1000 + seed)
end

function request()
  return prepared[math.random(#prepared)]
end
%(response)s
function done(summary, latency, requests)
  local quantiles = {}
  for i = 1, 999 do quantiles[#quantiles + 1] = latency:percentile(i / 10) end
  local counts = {}
  for _, thread in ipairs(threads) do
    local seen = thread:get("statuses") or {}
    for status, n in pairs(seen) do counts[#counts + 1] = string.format('"%%d":%%d', status, n) end
  end
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,'
    .. '"timeout":%%d},"latency_us":{"p50":%%d,"p99":%%d,"max":%%d},"quantiles_us":[%%s],"statuses":[{%%s}]}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(quantiles, ","), table.concat(counts, "},{")))
end
"""

# Counting statuses in Lua costs wrk a callback per response: only where a bench needs them.
_COUNT_STATUSES = """
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
"""


def lua_script(count_statuses: bool) -> str:
    return _SCRIPT % {"response": _COUNT_STATUSES if count_statuses else "", "mark": _MARK}


def request_line(method: str, path: str, token: str | None = None, body: str | None = None) -> str:
    """One prepared request for the Lua script; the body must be one line of JSON."""
    for part in (method, path, token or "", body or ""):
        if "\t" in part or "\n" in part:
            raise ValueError("a request line cannot hold a tab or a newline")
    return f"{method}\t{path}\t{token or '-'}\t{body or '-'}"


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    latency_ms: Spread
    quantiles_ms: list[float]  # 999 quantiles: a faithful sample of the distribution, for the plots
    errors: dict[str, int]
    statuses: dict[int, int] = field(default_factory=dict)  # only when counted

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def non_2xx(self) -> int:
        """Answers outside 2xx: counted per status when asked for, else wrk's own count (non-2xx/3xx)."""
        if self.statuses:
            return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)
        return self.errors.get("status", 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "per_second": self.per_second,
            "latency_ms": self.latency_ms.as_dict(),
            "errors": self.errors,
            "statuses": self.statuses,
            "non_2xx": self.non_2xx(),
        }


def parse_wrk_output(stdout: str) -> WrkRun:
    line = next((line for line in stdout.splitlines() if line.startswith(_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{stdout[-2000:]}")
    data = json.loads(line[len(_MARK) :])
    statuses: dict[int, int] = {}
    for entry in data["statuses"]:
        for status, n in entry.items():
            statuses[int(status)] = statuses.get(int(status), 0) + n
    us = data["latency_us"]
    return WrkRun(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        latency_ms=Spread(data["requests"], us["p50"] / 1000, us["p99"] / 1000, us["max"] / 1000),
        quantiles_ms=[q / 1000 for q in data["quantiles_us"]],
        errors=data["errors"],
        statuses=statuses,
    )


def ensure_wrk() -> str:
    """wrk's path; installed with apt-get when missing and we are root, else a clear exit."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("havip bench needs wrk for HTTP load: install it (apt-get install wrk) and run again")
    print("wrk is missing: installing it with apt-get ...", flush=True)
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], check=False, **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, **quiet)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get could not install wrk: install it by hand and run again")
    return found


def run_wrk(
    label: str,
    url: str,
    requests: Iterable[str],
    workdir: Path,
    *,
    seconds: float,
    threads: int = 2,
    connections: int = 32,
    count_statuses: bool = False,
) -> WrkRun:
    """`seconds` of load on `url` (the base URL; paths come from the request lines), with a progress line."""
    wrk = ensure_wrk()
    workdir.mkdir(parents=True, exist_ok=True)
    slug = label.replace(" ", "-").replace("/", "-")
    requests_file, script = workdir / f"{slug}.requests", workdir / f"{slug}.lua"
    requests_file.write_text("\n".join(requests) + "\n")
    script.write_text(lua_script(count_statuses))
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    command += ["-s", str(script), url, "--", str(requests_file)]
    progress = Progress(f"{label}: wrk -t{threads} -c{connections}", seconds, unit="s", rate=False)
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        while True:
            try:
                stdout, _ = process.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                progress.update(min(seconds, time.monotonic() - started))
    progress.finish(seconds)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}:\n{stdout[-2000:]}")
    return parse_wrk_output(stdout)
