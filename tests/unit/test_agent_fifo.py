"""Following a real FIFO in a temp dir: lines, the writer going, the next writer, no spinning."""

import asyncio
import contextlib
import errno
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.agent.fifo import FifoEvent, FifoLine, WriterGone, ensure_fifo, follow


class Follower:
    """follow() running in a task, its events in a queue."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: asyncio.Queue[FifoEvent] = asyncio.Queue()
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in follow(self.path):
            await self.events.put(event)

    async def next(self, timeout: float = 2.0) -> FifoEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def lines(self, count: int) -> list[str]:
        found = [await self.next() for _ in range(count)]
        assert all(isinstance(event, FifoLine) for event in found), found
        return [event.text for event in found if isinstance(event, FifoLine)]


@pytest.fixture
async def follower(tmp_path: Path) -> AsyncIterator[Follower]:
    running = Follower(tmp_path / "run" / "havip.fifo")
    yield running
    running.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running.task


async def open_writer(path: Path, flags: int = os.O_WRONLY) -> int:
    """Open as keepalived would once our reader is there (O_WRONLY would block without one)."""
    deadline = time.monotonic() + 2
    while True:
        try:
            return os.open(path, flags | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.005)


async def test_lines_arrive_with_the_time_they_were_read(follower: Follower) -> None:
    writer = await open_writer(follower.path)
    before = time.time()
    os.write(writer, b'INSTANCE "VI_1" BACKUP 100\nGROUP "VG_1" BACKUP 0\n')
    first = await follower.next()
    assert isinstance(first, FifoLine) and first.text == 'INSTANCE "VI_1" BACKUP 100'
    assert before <= first.read_at <= time.time()
    assert await follower.lines(1) == ['GROUP "VG_1" BACKUP 0']
    os.close(writer)


async def test_a_line_split_across_writes_arrives_whole(follower: Follower) -> None:
    writer = await open_writer(follower.path)
    os.write(writer, b'INSTANCE "VI_1" MAS')
    await asyncio.sleep(0.05)
    assert follower.events.empty()
    os.write(writer, b"TER 100\n")
    assert await follower.lines(1) == ['INSTANCE "VI_1" MASTER 100']
    os.close(writer)


async def test_the_writer_going_is_reported_and_the_next_writer_is_followed(follower: Follower) -> None:
    first = await open_writer(follower.path)
    os.write(first, b'INSTANCE "VI_1" MASTER 100\n')
    assert await follower.lines(1) == ['INSTANCE "VI_1" MASTER 100']
    os.close(first)  # keepalived stopped or was killed
    gone = await follower.next()
    assert isinstance(gone, WriterGone) and gone.unterminated == ""

    # keepalived's VRRP process opens the FIFO read-write; a respawned one does it again.
    second = await open_writer(follower.path, os.O_RDWR)
    os.write(second, b'INSTANCE "VI_1" BACKUP 100\n')
    assert await follower.lines(1) == ['INSTANCE "VI_1" BACKUP 100']
    os.close(second)
    assert isinstance(await follower.next(), WriterGone)


async def test_a_partial_line_left_by_a_dying_writer_is_reported_with_the_end(follower: Follower) -> None:
    writer = await open_writer(follower.path)
    os.write(writer, b'INSTANCE "VI_1" MAS')
    await asyncio.sleep(0.05)
    os.close(writer)
    gone = await follower.next()
    assert isinstance(gone, WriterGone) and gone.unterminated == 'INSTANCE "VI_1" MAS'


async def test_lines_written_before_the_reader_opened_are_not_lost(tmp_path: Path) -> None:
    # keepalived holds the FIFO open read-write, so what it wrote while the agent was down waits in the pipe.
    path = tmp_path / "havip.fifo"
    ensure_fifo(path)
    keepalived = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    os.write(keepalived, b'INSTANCE "VI_1" BACKUP 100\nINSTANCE "VI_1" MASTER 100\n')
    running = Follower(path)
    try:
        assert await running.lines(2) == ['INSTANCE "VI_1" BACKUP 100', 'INSTANCE "VI_1" MASTER 100']
    finally:
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task
        os.close(keepalived)


async def test_waiting_for_a_writer_does_not_spin(follower: Follower) -> None:
    writer = await open_writer(follower.path)
    os.close(writer)
    assert isinstance(await follower.next(), WriterGone)
    # Reopened with no writer: Linux reports no hang-up until a new writer has come and gone.
    started = time.process_time()
    await asyncio.sleep(0.3)
    assert time.process_time() - started < 0.05
    assert follower.events.empty()


async def test_cancelling_closes_the_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "havip.fifo"
    running = Follower(path)
    writer = await open_writer(path)
    os.close(writer)
    assert isinstance(await running.next(), WriterGone)
    running.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running.task
    readers = [fd for fd in os.listdir("/proc/self/fd") if _points_at(fd, path)]
    assert readers == []


def _points_at(fd: str, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except OSError:
        return False


def test_the_fifo_is_created_private_and_a_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a" / "havip.fifo"
    ensure_fifo(path)
    mode = path.stat().st_mode
    assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o600
    ensure_fifo(path)  # an existing FIFO is fine
    (tmp_path / "plain").write_text("")
    with pytest.raises(ValueError, match="not a FIFO"):
        ensure_fifo(tmp_path / "plain")
