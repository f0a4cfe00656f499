"""Following keepalived's notify FIFO: lines as they arrive, and the moment the writer goes.

What keepalived 2.2.7 does with the FIFO (seen on Linux, in a network namespace):
- it creates the FIFO (mode 0600) when it is missing, and its VRRP process
  opens it O_RDWR|O_NONBLOCK, so its writes never block and lines written
  while no reader is open wait in the pipe for the next reader;
- a graceful stop (SIGTERM, or SIGKILL of the parent, whose child then stops)
  writes STOP for every instance and group, then closes the FIFO about a
  second later; SIGKILL of the VRRP process writes nothing, leaves the VIPs
  in place, and the parent respawns a child that opens the FIFO again;
- a reload (SIGHUP) keeps the FIFO open and writes nothing, even with
  `fifo_write_vrrp_states_on_reload` in global_defs (checked: no line came).

We open it O_RDONLY|O_NONBLOCK. The open never waits for a writer, and Linux
reports the end of a pipe (POLLHUP, read() == 0) only once a writer that has
connected since the open has gone, so a fresh descriptor with no writer is
simply not readable: watching it with the event loop does not spin.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 65536


@dataclass(frozen=True)
class FifoLine:
    text: str
    read_at: float  # wall clock, seconds since the epoch


@dataclass(frozen=True)
class WriterGone:
    """Every writer closed the FIFO: keepalived stopped or died."""

    read_at: float
    # A partial line left when it went; keepalived writes whole lines, so this is news.
    unterminated: str = ""


FifoEvent = FifoLine | WriterGone


def ensure_fifo(path: Path) -> None:
    """Create the FIFO if it is missing; refuse a path that is something else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        if not stat.S_ISFIFO(path.stat().st_mode):
            raise ValueError(f"{path} exists and is not a FIFO") from None


async def follow(path: Path) -> AsyncIterator[FifoEvent]:
    """Lines from every keepalived that writes `path`, one after another, with a WriterGone between them.

    Runs until cancelled; closes its descriptor on the way out.
    """
    loop = asyncio.get_running_loop()
    ensure_fifo(path)
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        pending = b""
        try:
            while True:
                await readable.wait()
                readable.clear()
                chunk = _read(fd)
                if chunk is None:
                    continue
                read_at = time.time()
                if not chunk:
                    yield WriterGone(read_at, pending.decode("utf-8", "replace"))
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield FifoLine(line.decode("utf-8", "replace"), read_at)
        finally:
            loop.remove_reader(fd)
            os.close(fd)


def _read(fd: int) -> bytes | None:
    """What the pipe holds (b"" at its end), or None when there was nothing after all."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
