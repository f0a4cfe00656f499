"""The ledger store contract, on the in-memory store the quota unit tests use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from services.runtime.inventory import InventoryChange
from tests.contract.quota_store import LedgerStoreContract
from tests.quota_fakes import MemoryLedgerStore


class MemoryBackend:
    def __init__(self) -> None:
        self.store = MemoryLedgerStore()

    async def record_inventory(self, changes: Sequence[InventoryChange]) -> None:
        for change in changes:
            self.store.record_inventory(change)

    async def set_limits(self, tenant_id: str, overrides: Mapping[str, int | None]) -> None:
        self.store.set_limits(tenant_id, overrides)


class TestMemoryLedgerStore(LedgerStoreContract):
    @pytest.fixture
    async def backend(self) -> MemoryBackend:
        return MemoryBackend()
