"""Running a service as a child process, and waiting until it says it is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
        self, service: str, settings: Settings, log_dir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.service = service
        self.extra_env = extra_env
        self.settings = settings
        self.port: int = getattr(settings, PORT_SETTING[service])
        self.log = log_dir / f"{service}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._stop_requested = False

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.port}"

    def start(self) -> ServiceProcess:
        self.process = spawn_havip(["serve", self.service], self.settings, self.log, self.extra_env)
        return self

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

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.request_stop()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
