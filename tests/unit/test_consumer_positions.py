"""Where a worker starts a partition when PostgreSQL and Kafka disagree on how far it got."""

from __future__ import annotations

from aiokafka import TopicPartition

from services.runtime.positions import start_from

A, B, C = (TopicPartition("vrrp.events", p) for p in range(3))


def test_a_database_that_forgot_rewinds_to_its_own_positions() -> None:
    assert start_from({A: 120, B: 80}, {A: 100, B: 80}) == {A: 100}


def test_positions_ahead_of_kafka_change_nothing() -> None:
    # Saved just before a Kafka commit that did not happen: Kafka's is the lower, and where it starts anyway.
    assert start_from({A: 100}, {A: 120}) == {}


def test_a_partition_kafka_knows_nothing_of_starts_where_the_group_would() -> None:
    # A new group (after a broker loss) or a partition never committed: a saved position of another
    # log must not move it.
    assert start_from({A: None}, {A: 50}) == {}
    assert start_from({}, {C: 7}) == {}


def test_a_partition_without_a_saved_position_starts_from_kafka() -> None:
    assert start_from({A: 10, B: 20}, {}) == {}
