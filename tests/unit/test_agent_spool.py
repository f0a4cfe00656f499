"""The on-disk spool: seq order, whole files only, one deliverer at a time."""

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.messages import VrrpState
from schemas.reports import VrrpEventRequest
from services.agent.files import LockBusy
from services.agent.keepalived import Kind, NameKey
from services.agent.reports import Origin, ReportDraft
from services.agent.sequence import SequenceFile
from services.agent.spool import Spool

VI_1 = NameKey(Kind.INSTANCE, "VI_1")
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def draft(state: VrrpState = VrrpState.MASTER, havip_id: str = "havip-1") -> ReportDraft:
    return ReportDraft(havip_id, state, 100, T0, Origin.FIFO, VI_1)


def counting_clock(*values: int) -> Callable[[], int]:
    readings: Iterator[int] = iter(values)
    return lambda: next(readings)


def spool_in(tmp_path: Path, clock: Callable[[], int] | None = None) -> Spool:
    sequence = SequenceFile(tmp_path / "sequence", clock) if clock else SequenceFile(tmp_path / "sequence")
    return Spool(tmp_path / "spool", sequence)


def test_reports_come_back_in_seq_order_even_when_the_digits_differ(tmp_path: Path) -> None:
    spool = spool_in(tmp_path, counting_clock(9, 10, 100, 1_000_000))
    states = [VrrpState.BACKUP, VrrpState.MASTER, VrrpState.FAULT, VrrpState.STOP]
    appended = [spool.append(draft(state)) for state in states]
    assert [r.seq for r in appended] == [9, 10, 100, 1_000_000]
    assert spool.oldest(16) == appended
    assert spool.oldest(2) == appended[:2]
    assert len(spool) == 4 and not spool.is_empty()
    assert sorted(os.listdir(tmp_path / "spool"))[:2] == [".append.lock", "0000000000000000009.json"]


def test_a_report_round_trips_through_its_file(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    report = spool.append(ReportDraft("havip-9", VrrpState.FAULT, 7, T0, Origin.NOTIFY, NameKey(Kind.GROUP, "VG")))
    (back,) = spool.oldest(1)
    assert back == report
    assert (back.havip_id, back.state, back.priority, back.origin, back.key) == (
        "havip-9",
        VrrpState.FAULT,
        7,
        Origin.NOTIFY,
        NameKey(Kind.GROUP, "VG"),
    )
    assert back.wire(None) == {
        "havip_id": "havip-9",
        "state": "FAULT",
        "priority": 7,
        "seq": report.seq,
        "reported_at": "2026-11-25T10:00:00+00:00",
        "lease_seconds": None,
    }


@pytest.mark.parametrize("lease", [None, 12.5])
def test_what_the_agent_sends_is_what_the_gateway_takes(tmp_path: Path, lease: float | None) -> None:
    report = spool_in(tmp_path, counting_clock(1_764_064_800_000_000)).append(draft(VrrpState.BACKUP))
    taken = VrrpEventRequest.model_validate(report.wire(lease))
    assert taken == VrrpEventRequest(
        havip_id="havip-1", state=VrrpState.BACKUP, priority=100, seq=report.seq, reported_at=T0, lease_seconds=lease
    )


def test_removing_what_was_delivered_leaves_the_rest_in_order(tmp_path: Path) -> None:
    spool = spool_in(tmp_path, counting_clock(1, 2, 3))
    first, second, third = (spool.append(draft()) for _ in range(3))
    spool.remove([first, second])
    spool.remove([first])  # removing twice is harmless: another deliverer may have done it
    assert spool.oldest(16) == [third]
    spool.remove([third])
    assert spool.is_empty() and spool.oldest(16) == []


def test_half_written_files_are_never_read_and_old_ones_are_swept(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    report = spool.append(draft())
    leftover = tmp_path / "spool" / ".0000000000000000001.json.999.tmp"
    leftover.write_text('{"havip_id": "hav')
    assert spool.oldest(16) == [report]
    spool.sweep_temporary()
    assert leftover.exists()  # it may belong to a process writing right now
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    spool.sweep_temporary()
    assert not leftover.exists()
    assert [p for p in os.listdir(tmp_path / "spool") if p.endswith(".tmp")] == []


def test_an_unreadable_report_is_set_aside_and_does_not_block_the_others(tmp_path: Path) -> None:
    spool = spool_in(tmp_path, counting_clock(5, 6))
    first = spool.append(draft())
    second = spool.append(draft(VrrpState.BACKUP))
    (tmp_path / "spool" / f"{first.seq:019d}.json").write_text("{not json")
    assert spool.oldest(16) == [second]
    assert (tmp_path / "spool" / f"{first.seq:019d}.json.corrupt").exists()


def test_only_one_deliverer_at_a_time(tmp_path: Path) -> None:
    agent = spool_in(tmp_path)
    notify = Spool(tmp_path / "spool", SequenceFile(tmp_path / "sequence"))
    with agent.delivering(), pytest.raises(LockBusy), notify.delivering():
        pass
    with notify.delivering():
        pass


def test_a_deliverer_in_another_process_holds_the_lock(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    context = multiprocessing.get_context("fork")
    holding, release = context.Event(), context.Event()

    def hold() -> None:
        with Spool(tmp_path / "spool", SequenceFile(tmp_path / "sequence")).delivering():
            holding.set()
            release.wait(10)

    process = context.Process(target=hold)
    process.start()
    try:
        assert holding.wait(10)
        with pytest.raises(LockBusy), spool.delivering():
            pass
    finally:
        release.set()
        process.join(10)
    with spool.delivering():
        pass


def _append_many(directory: str, count: int) -> None:
    spool = Spool(Path(directory) / "spool", SequenceFile(Path(directory) / "sequence"))
    for _ in range(count):
        spool.append(draft())


def test_processes_appending_at_once_keep_one_order(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    reports = spool_in(tmp_path).oldest(1000)
    seqs = [r.seq for r in reports]
    assert len(seqs) == len(set(seqs)) == 120
    assert seqs == sorted(seqs)
