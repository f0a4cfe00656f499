"""`havip observe` as a process beside a keepalived lab, for the tests and `havip bench keepalived --observe`.

The lab's hub namespace plays the hypervisor host: its bridge ports (the host ends of the
nodes' veths) are the instances' ports. The observer runs in the root namespace, where it
reaches the broker on 127.0.0.1, and opens its sockets in the hub's namespace
(`HAVIP_OBSERVE_NETNS`), as a host agent would open them in the host's.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.dev.embedded import free_port
from services.dev.processes import spawn_havip
from services.runtime.settings import Settings

_FRAME = re.compile(r"frame port=(?P<port>\S+) at=(?P<at>\d+\.\d+) VrrpAdvert\(.*?priority=(?P<priority>\d+)")
_OBSERVED = re.compile(
    r"observed instance=(?P<instance>\S+) havip=(?P<havip>\S+) state=(?P<state>\S+) priority=(?P<priority>\d+)"
    r" seen_at=(?P<seen_at>\d+\.\d+): (?P<why>.*)$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Observation:
    """A state change the observer published, as its log line says."""

    instance_id: str
    havip_id: str
    state: str
    priority: int
    seen_at: float  # wall clock of the frame (for a lapse: when the observer concluded it)
    why: str


class ObserverProcess:
    def __init__(self, settings: Settings, host_id: str, netns: str, directory: Path, log_level: str = "DEBUG") -> None:
        self.port = free_port()
        # DEBUG (the lab's default): a line per frame, the moment each advert was seen (`first_advert`).
        update = {"observe_port": self.port, "observe_host_id": host_id, "observe_netns": netns, "log_level": log_level}
        self.settings = settings.model_copy(update=update)
        self.log_path = directory / f"observe-{host_id}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> ObserverProcess:
        self._process = spawn_havip(["observe"], self.settings, self.log_path)
        return self

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("havip observe was not started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=f"http://{self.settings.http_host}:{self.port}", timeout=2) as client:
            while True:
                if not self.running:
                    raise RuntimeError(f"havip observe exited:\n{self.tail()}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"havip observe not ready within {timeout:g} s:\n{self.tail()}")
                await asyncio.sleep(0.1)

    async def metrics(self) -> str:
        async with httpx.AsyncClient(base_url=f"http://{self.settings.http_host}:{self.port}", timeout=5) as client:
            return (await client.get("/metrics")).text

    def stop(self) -> None:
        if self._process is not None and self.running:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def observations(self, since: float = 0.0) -> list[Observation]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        found = [
            Observation(
                m["instance"], m["havip"], m["state"], int(m["priority"]), float(m["seen_at"]), m["why"].strip()
            )
            for m in _OBSERVED.finditer(text)
        ]
        return [o for o in found if o.seen_at >= since]

    async def first_advert(self, port: str, since: float, timeout: float = 20.0) -> float:
        """When the observer first saw an advert (priority > 0) arrive on `port` at or after `since`."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text(errors="replace")
            for match in _FRAME.finditer(text):
                if match["port"] == port and int(match["priority"]) > 0 and float(match["at"]) >= since:
                    return float(match["at"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"the observer saw no advert on {port} since {since}:\n{self.tail()}")
            await asyncio.sleep(0.05)

    async def wait_resignation(self, instance_id: str, since: float, timeout: float = 20.0) -> float:
        """When the observer saw `instance_id` resign (a priority-0 advert) at or after `since`."""
        deadline = time.monotonic() + timeout
        while True:
            for seen in self.observations(since):
                if seen.instance_id == instance_id and seen.state == "STOP":
                    return seen.seen_at
            if time.monotonic() > deadline:
                raise TimeoutError(f"the observer saw no resignation of {instance_id} since {since}:\n{self.tail()}")
            await asyncio.sleep(0.02)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
