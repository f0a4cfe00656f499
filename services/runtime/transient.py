"""What "try again later" means: the one classification of transient failures.

A failure is transient when the same work can succeed unchanged once a dependency is back:
PostgreSQL or the broker away, restarting or unreachable, or a transaction that lost a race
(a deadlock, a serialization failure). Anything else is a bug or bad data, and retrying it
forever would stop a partition: consumers dead-letter it instead, HTTP answers 500.

    TRANSIENT
      ├── DATABASE_UNAVAILABLE   the database cannot be reached now (503 at the API)
      ├── BROKER_UNAVAILABLE     the broker cannot be reached now (503 at the API)
      └── lost races             deadlock, serialization failure, a pooled connection in a bad
                                 state: the transaction is done again
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError

DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    # A connection whose server died under it can be left mid-protocol; the next statement on it
    # fails with "cannot switch to state ...; another operation is in progress" (seen in the chaos
    # test while PostgreSQL restarted).
    asyncpg.InternalClientError,
)

BROKER_UNAVAILABLE: tuple[type[BaseException], ...] = (TimeoutError, OSError, KafkaError)

TRANSIENT: tuple[type[BaseException], ...] = (
    *DATABASE_UNAVAILABLE,
    KafkaError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether the work that raised `exc` should be done again later, unchanged."""
    return isinstance(exc, TRANSIENT)
