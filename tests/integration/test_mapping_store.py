"""The mapping tables' contract (tests/contract/mapping_store.py), on PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from schemas.messages import VrrpReported
from services.gateway.renewals import write_renewals
from services.mapping.postgres_store import PostgresMappingStore
from tests.contract.mapping_store import MappingStoreContract, Tables

pytestmark = pytest.mark.integration


class TestPostgresMappingStore(MappingStoreContract):
    @pytest.fixture
    async def tables(self, db: asyncpg.Pool) -> Tables:
        async def leave_renewal(reported: VrrpReported) -> None:
            await write_renewals(db, [reported])  # as a gateway leaves them

        return Tables(PostgresMappingStore(db), leave_renewal)
