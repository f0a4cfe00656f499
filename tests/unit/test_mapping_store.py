"""The mapping tables' contract (tests/contract/mapping_store.py), on the tables in memory."""

from __future__ import annotations

import pytest

from schemas.messages import VrrpReported
from tests.contract.mapping_store import MappingStoreContract, Tables
from tests.mapping_fakes import MemoryMappingStore


class TestMemoryMappingStore(MappingStoreContract):
    @pytest.fixture
    def tables(
        self,
    ) -> Tables:
        memory = MemoryMappingStore()

        async def leave_renewal(reported: VrrpReported) -> None:
            memory.leave_renewal(reported)

        return Tables(memory, leave_renewal)
