"""How a service tells a broker that lost its topics from one that merely grew or is new."""

from __future__ import annotations

import uuid

from aiokafka import TopicPartition

from services.runtime.broker_watch import compare_logs, raised_marks

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


def test_a_growing_log_is_healthy() -> None:
    check = compare_logs({A0: 5, A1: 3}, {A0: 7, A1: 3}, ["a"], ["a"])
    assert check.healthy


def test_an_end_offset_below_its_mark_means_the_log_was_lost() -> None:
    check = compare_logs({A0: 5, A1: 3, B0: 2}, {A0: 7, A1: 1, B0: 2}, ["a", "b"], ["a", "b"])
    assert check.lost == {"a"} and not check.missing


def test_a_topic_that_had_records_and_is_gone_is_lost_and_missing() -> None:
    check = compare_logs({A0: 5, B0: 2}, {B0: 2}, ["a", "b"], ["b"])
    assert check.lost == {"a"} and check.missing == {"a"}


def test_a_topic_never_written_that_is_missing_is_only_missing() -> None:
    # A new cluster, or `havip topics` not run yet: create it, there is nothing to recover.
    check = compare_logs({A0: 0}, {}, ["a"], [])
    assert check.missing == {"a"} and not check.lost


def test_a_partition_that_vanished_counts_as_lost() -> None:
    check = compare_logs({A0: 5, A1: 3}, {A0: 5}, ["a"], ["a"])
    assert check.lost == {"a"}


def test_a_first_look_has_nothing_to_compare_with() -> None:
    assert compare_logs({}, {A0: 0}, ["a"], ["a"]).healthy


def test_marks_only_rise() -> None:
    assert raised_marks({A0: 5, A1: 3}, {A0: 4, A1: 9, B0: 1}) == {A0: 5, A1: 9, B0: 1}


def test_a_topic_made_again_is_lost_whatever_its_offsets_say() -> None:
    # The same number of records was written to the new topic before anyone looked: only its id tells.
    old, new = uuid.UUID(int=1), uuid.UUID(int=2)
    check = compare_logs({A0: 5}, {A0: 5}, ["a", "b"], ["a", "b"], {"a": old, "b": old}, {"a": new, "b": old})
    assert check.lost == {"a"}


def test_a_look_without_end_offsets_still_sees_topics_gone_and_made_again() -> None:
    old, new = uuid.UUID(int=1), uuid.UUID(int=2)
    assert compare_logs({A0: 5, B0: 1}, None, ["a", "b"], ["b"], {"b": old}, {"b": old}).lost == {"a"}
    assert compare_logs({A0: 5}, None, ["a"], ["a"], {"a": old}, {"a": new}).lost == {"a"}
    assert compare_logs({A0: 5}, None, ["a"], ["a"], {"a": old}, {"a": old}).healthy


def test_a_topic_seen_for_the_first_time_is_not_lost() -> None:
    assert compare_logs({}, None, ["a"], ["a"], {}, {"a": uuid.UUID(int=7)}).healthy
