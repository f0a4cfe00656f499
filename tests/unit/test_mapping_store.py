"""The mapping tables' contract (tests/contract/mapping_store.py), on the tables in memory."""

from __future__ import annotations

import pytest

from schemas.messages import VrrpReported
from tests.contract.mapping_store import MappingStoreContract, Tables
from tests.mapping_fakes import MemoryMappingStore, StoredRenewal


class TestMemoryMappingStore(MappingStoreContract):
    @pytest.fixture
    def tables(
        self,
    ) -> Tables:
        memory = MemoryMappingStore()

        async def leave_renewal(reported: VrrpReported) -> None:
            assert reported.lease_seconds is not None
            memory.leave_renewal(
                StoredRenewal(
                    havip_id=reported.havip_id,
                    instance_id=reported.instance_id,
                    tenant_id=reported.tenant_id,
                    message_id=reported.message_id,
                    priority=reported.priority,
                    seq=reported.seq,
                    reported_at=reported.reported_at,
                    received_at=reported.received_at,
                    lease_seconds=reported.lease_seconds,
                )
            )

        return Tables(memory, leave_renewal)
