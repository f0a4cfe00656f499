"""The ledger store contract, on PostgreSQL with the migrations applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
import pytest

from services.quota.postgres_store import PostgresLedgerStore
from services.quota.tenant_limits import set_limits
from services.runtime.inventory import InventoryChange, record_inventory
from tests.contract.quota_store import LedgerStoreContract

pytestmark = pytest.mark.integration


class PostgresBackend:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.store = PostgresLedgerStore(pool)

    async def record_inventory(self, changes: Sequence[InventoryChange]) -> None:
        async with self.pool.acquire() as conn:
            for change in changes:
                await record_inventory(conn, change, "quota")

    async def set_limits(self, tenant_id: str, overrides: Mapping[str, int | None]) -> None:
        await set_limits(self.pool, tenant_id, dict(overrides))


class TestPostgresLedgerStore(LedgerStoreContract):
    @pytest.fixture
    async def backend(self, db: asyncpg.Pool) -> PostgresBackend:
        return PostgresBackend(db)
