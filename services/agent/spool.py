"""Reports on disk until the gateway has answered for them, oldest first.

One JSON file per report in `spool/`, named by its zero-padded seq so that
the lexical order of the names is the order of the reports. Numbering and
writing happen under one lock (`.append.lock`), and listing takes the same
lock shared, so a reader never sees a report without the older ones that
another process was numbering at the same moment. Whoever delivers holds
`.deliver.lock`, so the agent and `havip notify` never send at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from services.agent.files import fsync_directory, locked, write_atomically
from services.agent.reports import ReportDraft, SpooledReport
from services.agent.sequence import SequenceFile

log = logging.getLogger(__name__)

_SUFFIX = ".json"
_DIGITS = 19  # 2**63-1 has 19 digits


class Spool:
    def __init__(self, directory: Path, sequence: SequenceFile) -> None:
        self.directory = directory
        self.sequence = sequence
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._append_lock = directory / ".append.lock"
        self._deliver_lock = directory / ".deliver.lock"

    def append(self, draft: ReportDraft) -> SpooledReport:
        """Number the report and store it; it is on disk when this returns."""
        with locked(self._append_lock):
            report = draft.numbered(self.sequence.next())
            write_atomically(self._path(report.seq), report.model_dump_json().encode("utf-8"))
        return report

    def oldest(self, limit: int) -> list[SpooledReport]:
        """Up to `limit` reports, oldest first; unreadable files are set aside, not fatal."""
        with locked(self._append_lock, shared=True):
            names = sorted(name for name in os.listdir(self.directory) if _is_report(name))
        reports: list[SpooledReport] = []
        for name in names:
            if len(reports) == limit:
                break
            path = self.directory / name
            try:
                reports.append(SpooledReport.model_validate_json(path.read_bytes()))
            except FileNotFoundError:
                continue  # another deliverer finished it between the listing and the read
            except (ValidationError, UnicodeDecodeError) as exc:
                log.error("spool file unreadable path=%s error=%s; set aside as .corrupt", path, exc)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(path, path.with_name(name + ".corrupt"))
        return reports

    def is_empty(self) -> bool:
        return not any(_is_report(name) for name in os.listdir(self.directory))

    def __len__(self) -> int:
        return sum(1 for name in os.listdir(self.directory) if _is_report(name))

    def remove(self, reports: list[SpooledReport]) -> None:
        for report in reports:
            with contextlib.suppress(FileNotFoundError):
                self._path(report.seq).unlink()
        if reports:
            fsync_directory(self.directory)

    @contextlib.contextmanager
    def delivering(self, *, wait: bool = False) -> Iterator[None]:
        """The right to send from this spool; raises files.LockBusy when someone else has it."""
        with locked(self._deliver_lock, wait=wait):
            yield

    def sweep_temporary(self, older_than: float = 60.0) -> None:
        """Forget half-written files left by a process that died mid-write."""
        cutoff = time.time() - older_than
        for name in os.listdir(self.directory):
            if name.endswith(".tmp"):
                path = self.directory / name
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:0{_DIGITS}d}{_SUFFIX}"


def _is_report(name: str) -> bool:
    return name.endswith(_SUFFIX) and not name.startswith(".")
