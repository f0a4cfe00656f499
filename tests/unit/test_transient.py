"""The one classification of transient failures (services/runtime/transient.py)."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaConnectionError

from services.runtime.transient import is_transient


def test_a_dependency_away_or_not_ready_is_transient() -> None:
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert is_transient(KafkaConnectionError())
    assert is_transient(asyncpg.DeadlockDetectedError("deadlock"))
    # A migration not applied, or a table renamed under a running service: an operator puts it right.
    assert is_transient(asyncpg.UndefinedTableError("relation does not exist"))
    assert is_transient(asyncpg.InsufficientResourcesError("disk full"))


def test_bad_data_and_bugs_are_not() -> None:
    assert not is_transient(asyncpg.NumericValueOutOfRangeError("out of range"))
    assert not is_transient(asyncpg.UniqueViolationError("duplicate key"))
    assert not is_transient(ValueError("a bug"))
