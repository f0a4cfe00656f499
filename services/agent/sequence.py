"""Report numbers that only grow: across restarts, reboots and concurrent processes.

The gateway orders an instance's reports by `seq` and ignores any that is not
newer than the last it applied. The number is the wall clock in microseconds,
or one more than the last number handed out when the clock is behind it (it
stepped back, or many reports came in one microsecond). A re-imaged instance
has lost the file but not the clock, so its numbers still grow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from schemas.messages import MAX_SEQ
from services.agent.files import locked, write_atomically

log = logging.getLogger(__name__)


def clock_microseconds() -> int:
    return time.time_ns() // 1_000


class SequenceFile:
    """The last number handed out, in `path`; `path` + `.lock` serialises every process that numbers."""

    def __init__(self, path: Path, clock: Callable[[], int] = clock_microseconds) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._clock = clock

    def next(self) -> int:
        return self.reserve(1)[0]

    def reserve(self, count: int) -> range:
        """`count` consecutive numbers, each greater than any handed out before."""
        if count < 1:
            raise ValueError("reserve at least one number")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self._lock_path):
            first = max(self._clock(), self._last() + 1)
            last = first + count - 1
            if last > MAX_SEQ:
                raise OverflowError(f"sequence {self.path} would pass 2**63-1")
            self._store(last)
        return range(first, last + 1)

    def _last(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        try:
            return int(text)
        except ValueError:
            # Writes are whole-file renames, so only disk damage gets here; the clock still orders.
            log.error("sequence file unreadable path=%s content=%r; continuing from the clock", self.path, text[:40])
            return 0

    def _store(self, value: int) -> None:
        write_atomically(self.path, f"{value}\n".encode("ascii"))
