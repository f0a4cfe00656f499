"""The bench's side of its watch client processes (services/dev/bench_watchers.py): start, follow, collect.

Each process gets a share of the watchers and says, one JSON line at a time,
when all of its streams are synced and how many change lines they received;
at the end it writes its receipts to a file the bench merges.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from services.dev.embedded import exit_with_parent
from services.dev.watch_delays import ChangeKey, merge_receipts

READY_SECONDS = 180.0


def shares(total: int, parts: int) -> list[int]:
    """`total` watchers over at most `parts` processes, as even as can be; no process gets none."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


class WatchClients:
    def __init__(self, url: str, watchers: int, processes: int, epoch: str, since: int, workdir: Path) -> None:
        self._url = url
        self._shares = shares(watchers, processes)
        self._epoch = epoch
        self._since = since
        self._workdir = workdir
        self._children: list[asyncio.subprocess.Process] = []
        self._readers: list[asyncio.Task[None]] = []
        self._ready = [False] * len(self._shares)
        self._changes = [0] * len(self._shares)
        self._reported: list[Path | None] = [None] * len(self._shares)

    async def __aenter__(self) -> WatchClients:
        try:
            for k, share in enumerate(self._shares):
                await self._spawn(k, share)
            await self._until(lambda k: self._ready[k], READY_SECONDS, "every watch stream synced")
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    @property
    def delivered(self) -> int:
        """Change lines the watchers received so far, as the processes last said."""
        return sum(self._changes)

    async def wait_delivered(self, expected: int, quiet_seconds: float) -> None:
        """Until `expected` change lines arrived, or none for `quiet_seconds` (some watchers missed some)."""
        last, last_moved = self.delivered, time.monotonic()
        while self.delivered < expected and time.monotonic() - last_moved < quiet_seconds:
            await asyncio.sleep(0.2)
            if self.delivered != last:
                last, last_moved = self.delivered, time.monotonic()

    async def report(self) -> tuple[dict[ChangeKey, list[float]], dict[str, int]]:
        """Every process's receipts, merged, and their tallies summed; the processes then exit."""
        for child in self._children:
            assert child.stdin is not None
            child.stdin.write(b"report\n")
            await child.stdin.drain()
        await self._until(lambda k: self._reported[k] is not None, 60, "every client process reported")
        parts: list[list[tuple[str, int, list[float]]]] = []
        tally: dict[str, int] = {}
        for path in self._reported:
            assert path is not None
            said = json.loads(path.read_text())
            parts.append(said["receipts"])
            for name, count in said["tally"].items():
                tally[name] = tally.get(name, 0) + count
        return merge_receipts(parts), tally

    async def stop(self) -> None:
        for child in self._children:
            if child.returncode is None:
                child.terminate()
        for child in self._children:
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def _spawn(self, k: int, share: int) -> None:
        command = ["-m", "services.dev.bench_watchers", "--url", self._url, "--watchers", str(share)]
        command += ["--epoch", self._epoch, "--since", str(self._since)]
        command += ["--report", str(self._workdir / f"watchers-{k}.json")]
        log = _append_to(self._workdir / f"watchers-{k}.log")
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                preexec_fn=exit_with_parent,
            )
        finally:
            log.close()  # the child has its own copy
        self._children.append(child)
        self._readers.append(asyncio.create_task(self._follow(k, child)))

    async def _follow(self, k: int, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        async for line in child.stdout:
            said = json.loads(line)
            if "ready" in said:
                self._ready[k] = True
            elif "changes" in said:
                self._changes[k] = said["changes"]
            elif "reported" in said:
                self._reported[k] = Path(said["reported"])

    async def _until(self, done: Callable[[int], bool], seconds: float, what: str) -> None:
        """Until `done(k)` holds for every process k; one that is gone without it is a failure.

        Gone means its stdout is read to the end, not that it exited: a process says its last
        line and exits, and that line may not have been read yet when the exit is seen.
        """
        deadline = time.monotonic() + seconds
        while not all(done(k) for k in range(len(self._children))):
            for k, reader in enumerate(self._readers):
                if reader.done() and not done(k):
                    log = self._workdir / f"watchers-{k}.log"
                    code = await self._children[k].wait()
                    raise RuntimeError(f"watch client {k} exited with {code} before {what}: see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not {what} after {seconds:g} s")
            await asyncio.sleep(0.1)


def _append_to(path: Path) -> BinaryIO:
    return open(path, "ab")  # noqa: SIM115 - closed by the caller once the child holds it
