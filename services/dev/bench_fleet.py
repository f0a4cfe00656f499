"""A fleet of agents for the benches, through the gateway's front door: its own process.

`python -m services.dev.bench_fleet` speaks the agent protocol to a gateway, as `havip agent`
would on the instances of the seeded HAVIPs (services/dev/bench_seed.py): every request
carries its instance's agent token, and each report is one request, as keepalived's
transitions come one at a time.

  renewing   HAVIPs 0 .. R-1: the owner repeats its MASTER claim (lease 2.5 s, as the agent)
             once a second, so R renewals a second keep R claims live
  changing   the HAVIPs after those: the owner alternately steps down (BACKUP) and claims
             again (MASTER), S reports a second, so every report changes the owner

Pacing is by the clock (what is due by now is sent), over keep-alive connections written
by hand: a general HTTP client would cost the measuring machine more than the gateway's
answer. Every second a JSON line says what was sent and answered, and how long answers took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.dev import bench_seed
from services.dev.bench_load import Numbering, due
from services.dev.benchkit import percentile
from services.dev.embedded import exit_with_parent
from services.dev.processes import settings_env
from services.runtime.settings import Settings

_TICK = 0.01
RENEWAL_LEASE_SECONDS = 2.5
# A claim that changes hands is not renewed here: a longer lease keeps it live between reports.
CHANGE_LEASE_SECONDS = 30.0


@dataclass
class FleetPlan(Numbering):
    """Which report is next on each side; pure, so the order of reports is testable without a gateway."""

    renewing: int
    changing: int

    def renewal(self, now_us: int) -> tuple[int, str, str, int, float]:
        """(HAVIP, instance, state, seq, lease) of the next renewal."""
        n = self._next_renewal(self.renewing)
        return n, bench_seed.owner_of(n), "MASTER", self.next_seq(now_us), RENEWAL_LEASE_SECONDS

    def report(self, now_us: int) -> tuple[int, str, str, int, float | None]:
        """(HAVIP, instance, state, seq, lease) of the next owner-changing report."""
        n, claims = self._next_change(self.renewing, self.changing)
        if claims:
            return n, bench_seed.owner_of(n), "MASTER", self.next_seq(now_us), CHANGE_LEASE_SECONDS
        return n, bench_seed.owner_of(n), "BACKUP", self.next_seq(now_us), None


def fleet_split(havips: int, renewals_per_second: float) -> tuple[int, int]:
    """How many HAVIPs renew (once a second each, as far as they go) and how many change owner."""
    renewing = min(havips // 2, max(1, int(renewals_per_second)))
    return renewing, havips - renewing


def start_fleet(
    settings: Settings, gateway_url: str, workdir: Path, renewing: int, changing: int, rates: tuple[float, float]
) -> subprocess.Popen[bytes]:
    """Agents over HTTP (services/dev/bench_fleet.py), in a process of their own."""
    reports, renewals = rates
    command = [sys.executable, "-m", "services.dev.bench_fleet", "--gateway", gateway_url]
    command += ["--renewing", str(renewing), "--changing", str(changing)]
    command += ["--reports-per-second", f"{reports:g}", "--renewals-per-second", f"{renewals:g}"]
    with open(workdir / "bench-load.log", "ab") as out:
        return subprocess.Popen(
            command, env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT, preexec_fn=exit_with_parent
        )


def report_body(n: int, state: str, seq: int, lease: float | None) -> bytes:
    body: dict[str, object] = {"havip_id": f"havip-{n}", "state": state, "priority": 100, "seq": seq}
    if lease is not None:
        body["lease_seconds"] = lease
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Answers:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


class Connection:
    """One keep-alive HTTP/1.1 connection to the gateway, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, token: str, body: bytes) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            self._writer.write(head + body)
            status = int((await self._reader.readline()).split(b" ", 2)[1])
            length = 0
            while (line := await self._reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await self._reader.readexactly(length)
            return status
        except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
            self.close()
            return 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def run_fleet(
    gateway_url: str,
    renewing: int,
    changing: int,
    renewals_per_second: float,
    reports_per_second: float,
    connections: int,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    address = urlsplit(gateway_url)
    assert address.hostname is not None and address.port is not None
    plan = FleetPlan(renewing, changing)
    queue: asyncio.Queue[tuple[str, bytes, float]] = asyncio.Queue()
    answers = Answers()

    async def agent_connection() -> None:
        connection = Connection(address.hostname or "", address.port or 0)
        while True:
            token, body, due_at = await queue.get()
            status = await connection.post("/v1/vrrp-events", token, body)
            answers.statuses[status] += 1
            answers.latencies_ms.append((time.perf_counter() - due_at) * 1000)

    workers = [loop.create_task(agent_connection()) for _ in range(connections)]
    started = last_said = time.monotonic()
    total = Answers()
    lease: float | None  # a renewal's lease, or a report's (none for a state change)
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            now_us = int(time.time() * 1_000_000)
            due_at = time.perf_counter()
            for _ in range(due(renewals_per_second, elapsed, plan.renewals_sent)):
                n, instance, state, seq, lease = plan.renewal(now_us)
                queue.put_nowait((bench_seed.agent_token(instance), report_body(n, state, seq, lease), due_at))
            for _ in range(due(reports_per_second, elapsed, plan.reports_sent)):
                n, instance, state, seq, lease = plan.report(now_us)
                queue.put_nowait((bench_seed.agent_token(instance), report_body(n, state, seq, lease), due_at))
            if time.monotonic() - last_said >= 1.0:
                last_said = time.monotonic()
                _say(plan, last_said - started, answers, queue.qsize())
                total.statuses.update(answers.statuses)
                answers.statuses.clear()
                answers.latencies_ms.clear()
            await asyncio.sleep(_TICK)
    finally:
        for worker in workers:
            worker.cancel()
        total.statuses.update(answers.statuses)
        _say(plan, time.monotonic() - started, total, queue.qsize(), final=True)


def _say(plan: FleetPlan, elapsed: float, answers: Answers, queued: int, *, final: bool = False) -> None:
    ordered = sorted(answers.latencies_ms)
    line = {
        "seconds": elapsed,
        "renewals": plan.renewals_sent,
        "reports": plan.reports_sent,
        "queued": queued,
        "answers": {str(status): count for status, count in sorted(answers.statuses.items())},
    }
    if ordered:
        line |= {"answer_p50_ms": percentile(ordered, 0.5), "answer_p99_ms": percentile(ordered, 0.99)}
    if final:
        line["final"] = True
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--renewing", type=int, required=True, help="HAVIPs 0..R-1 renew once a second")
    parser.add_argument("--changing", type=int, required=True, help="HAVIPs after them change owner")
    parser.add_argument("--renewals-per-second", type=float, required=True)
    parser.add_argument("--reports-per-second", type=float, required=True)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(
        run_fleet(
            args.gateway,
            args.renewing,
            args.changing,
            args.renewals_per_second,
            args.reports_per_second,
            args.connections,
        )
    )


if __name__ == "__main__":
    main()
