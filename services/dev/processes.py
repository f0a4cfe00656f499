"""Running a service as a child process, and waiting until it says it is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.dev.embedded import exit_with_parent
from services.runtime.settings import Settings

PORT_SETTING = {
    "gateway": "gateway_port",
    "forwarder": "forwarder_port",
    "quota": "quota_port",
    "mapping": "mapping_port",
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"HAVIP_{name.upper()}"] = str(value)
    return env


def spawn_havip(
    arguments: list[str], settings: Settings, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`havip ARGUMENTS` as a child that dies with us, its output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", *arguments],
            env={**settings_env(settings), **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=exit_with_parent,
            # Ctrl-C reaches only our parent, which stops services before their broker.
            start_new_session=True,
        )


class ServiceProcess:
    def __init__(
        self,
        service: str,
        settings: Settings,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self.service = service
        # Tells apart several processes of one service (a standby worker): its log, its restarts.
        self.name = name or service
        self.extra_env = extra_env
        self.settings = settings
        self.port: int = getattr(settings, PORT_SETTING[service])
        self.log = log_dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._stop_requested = False

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.port}"

    @property
    def returncode(self) -> int | None:
        """None while it runs (or before it started); its exit status once it is gone."""
        return self.process.poll() if self.process is not None else None

    def start(self) -> ServiceProcess:
        """Start it, or start it again once it has exited."""
        self.process = spawn_havip(["serve", self.service], self.settings, self.log, self.extra_env)
        self._stop_requested = False
        return self

    def ready(self) -> bool:
        """One look at /readyz, without waiting."""
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.service} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=2)
                if answer.status_code == 200:
                    return
                last = answer.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{self.service} not ready after {timeout}s ({last}):\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def request_stop(self) -> None:
        """SIGTERM, once: a second one would make uvicorn skip its graceful shutdown."""
        if self.process is not None and self.process.poll() is None and not self._stop_requested:
            self.process.send_signal(signal.SIGTERM)
            self._stop_requested = True

    def wait_exit(self, timeout: float) -> int:
        """Its exit status, once it has exited (subprocess.TimeoutExpired after `timeout`)."""
        if self.process is None:
            raise RuntimeError(f"{self.service} was never started")
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.request_stop()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class Restarts:
    """When to start a child again after it died.

    The delay doubles with each death (1 s, 2 s, 4 s ... up to `cap`), so a
    child that cannot start does not spin; it is back to `first` once the
    child had stayed up `settle` seconds, so a rare crash is mended at once.
    """

    first: float = 1.0
    cap: float = 30.0
    settle: float = 60.0
    up_since: float = field(default_factory=time.monotonic)
    count: int = 0
    due: float | None = None
    recovering: bool = False
    _delay: float = 0.0

    def died(self, now: float) -> float:
        """Schedule the next start; returns the delay chosen."""
        if not self._delay or now - self.up_since >= self.settle:
            self._delay = self.first
        delay = self._delay
        self._delay = min(delay * 2, self.cap)
        self.count += 1
        self.due = now + delay
        self.recovering = False
        return delay

    def start_failed(self, now: float) -> float:
        """Like a death right after a start: the delay keeps doubling."""
        self.up_since = now
        return self.died(now)

    def is_due(self, now: float) -> bool:
        return self.due is not None and now >= self.due

    def restarted(self, now: float) -> None:
        self.due = None
        self.up_since = now
        self.recovering = True


@dataclass(frozen=True)
class Child:
    """A child process kept alive: whether (and how) it exited, how to start it again, whether it serves."""

    name: str
    returncode: Callable[[], int | None]
    start: Callable[[], object]
    ready: Callable[[], bool] = lambda: True


def heal(children: Iterable[Child], restarts: dict[str, Restarts], now: float) -> list[str]:
    """One look at every child: schedule a start for the dead, start those due, notice the ready.

    Returns one line per event. Never sleeps: a child due later waits for a later call.
    """
    said: list[str] = []
    for child in children:
        state = restarts.setdefault(child.name, Restarts(up_since=now))
        if state.due is not None:
            if state.is_due(now):
                try:
                    child.start()
                    state.restarted(now)
                except Exception as exc:
                    delay = state.start_failed(now)
                    said.append(f"{child.name} did not start ({exc}); retrying in {delay:g}s (restart {state.count})")
            continue
        if (code := child.returncode()) is not None:
            delay = state.died(now)
            said.append(f"{child.name} exited with {code}; restarting in {delay:g}s (restart {state.count})")
        elif state.recovering and child.ready():
            state.recovering = False
            said.append(f"{child.name} is ready again")
    return said
