"""What "try again later" means: the one classification of transient failures.

A failure is transient when the same work can succeed unchanged once a dependency is back:
PostgreSQL or the broker away, restarting or unreachable, a transaction that lost a race (a
deadlock, a serialization failure), or a database not in a state to do it yet (a migration
not applied, a table renamed, out of resources, shutting down: an operator puts that right,
and a message dead-lettered meanwhile would be lost to its operation, which would stay
Pending for good). Anything else is a bug or bad data (a value out of range, a constraint
violated), and retrying it forever would stop a partition: consumers dead-letter it instead,
HTTP answers 500.

    is_transient
      ├── DATABASE_UNAVAILABLE   the database cannot be reached now (503 at the API)
      ├── BROKER_UNAVAILABLE     the broker cannot be reached now (503 at the API)
      ├── lost races             deadlock, serialization failure, a pooled connection in a bad
      │                          state: the transaction is done again
      └── not ready              SQLSTATE classes 08, 42, 53, 57, 58
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError

DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
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


# Connection exception, undefined object or privilege, insufficient resources, operator
# intervention, system error: the database, not the data, has to change for the work to succeed.
_NOT_READY_CLASSES = frozenset({"08", "42", "53", "57", "58"})


def is_transient(exc: BaseException) -> bool:
    """Whether the work that raised `exc` should be done again later, unchanged."""
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in _NOT_READY_CLASSES
