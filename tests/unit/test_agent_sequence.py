"""Report numbers only grow: with the clock, against the clock, across processes and restarts."""

import multiprocessing
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.messages import MAX_SEQ
from services.agent.sequence import SequenceFile


def clock_reading(*values: int) -> Callable[[], int]:
    readings = iter(values)
    return lambda: next(readings)


def test_the_number_is_the_clock_in_microseconds_when_the_clock_is_ahead(tmp_path: Path) -> None:
    sequence = SequenceFile(tmp_path / "seq", clock_reading(1_000, 5_000))
    assert sequence.next() == 1_000
    assert sequence.next() == 5_000
    assert (tmp_path / "seq").read_text().strip() == "5000"


def test_a_clock_that_goes_backwards_or_stands_still_still_grows_the_number(tmp_path: Path) -> None:
    sequence = SequenceFile(tmp_path / "seq", clock_reading(10_000, 10_000, 3_000, 9_999, 20_000))
    assert [sequence.next() for _ in range(5)] == [10_000, 10_001, 10_002, 10_003, 20_000]


def test_a_restart_continues_from_the_file(tmp_path: Path) -> None:
    assert SequenceFile(tmp_path / "seq", clock_reading(50)).next() == 50
    # The instance rebooted with its clock set back: the file still rules.
    assert SequenceFile(tmp_path / "seq", clock_reading(7)).next() == 51


def test_a_lost_file_falls_back_to_the_clock(tmp_path: Path) -> None:
    # A re-imaged instance: no file, but the clock has moved on since the last report.
    assert (
        SequenceFile(tmp_path / "state" / "seq", clock_reading(1_764_050_000_123_456)).next() == 1_764_050_000_123_456
    )


def test_a_damaged_file_falls_back_to_the_clock(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("not a number")
    assert SequenceFile(tmp_path / "seq", clock_reading(42)).next() == 42


def test_reserve_hands_out_a_consecutive_block(tmp_path: Path) -> None:
    sequence = SequenceFile(tmp_path / "seq", clock_reading(100, 100))
    assert list(sequence.reserve(3)) == [100, 101, 102]
    assert sequence.next() == 103
    with pytest.raises(ValueError):
        sequence.reserve(0)


def test_the_number_never_passes_two_to_the_63_minus_one(tmp_path: Path) -> None:
    sequence = SequenceFile(tmp_path / "seq", clock_reading(MAX_SEQ - 1, 0, 0))
    assert sequence.next() == MAX_SEQ - 1
    assert sequence.next() == MAX_SEQ
    with pytest.raises(OverflowError):
        sequence.next()


def _number(path: str, count: int, results: "multiprocessing.Queue[list[int]]") -> None:
    sequence = SequenceFile(Path(path))
    results.put([sequence.next() for _ in range(count)])


def test_processes_numbering_at_once_never_share_or_reuse_a_number(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[list[int]] = context.Queue()
    workers = [context.Process(target=_number, args=(str(tmp_path / "seq"), 150, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    per_process = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    everything = [n for numbers in per_process for n in numbers]
    assert len(set(everything)) == len(everything) == 600
    for numbers in per_process:
        assert numbers == sorted(numbers)
    assert int((tmp_path / "seq").read_text()) == max(everything)
