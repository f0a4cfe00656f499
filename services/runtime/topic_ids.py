"""Each topic's id, from the broker's metadata: a topic that was made again has a new one.

Kafka gives every topic a UUID when it is created (KIP-516, Kafka 2.8 and later); Tansu does
too. A topic deleted and created again, or a broker that came back empty and had its topics
made afresh, answers with ids never seen before, whatever its end offsets say. Asking costs
the broker one metadata look per topic, while asking a partition where it ends costs the
embedded broker (Tansu 0.6) a walk over every batch the partition ever held
(docs/benchmarks.md, "Why failovers slowed down"), so the broker watch asks for ids every
second and for end offsets rarely.

aiokafka 0.14 speaks metadata up to version 5, which carries no ids, so version 10 is
written here with aiokafka's protocol types. tests/unit/test_topic_ids.py round-trips both
structures, and pyproject.toml bounds aiokafka below the next minor release.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from io import BytesIO
from typing import Any

from aiokafka import AIOKafkaClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    AbstractType,
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

_METADATA = 3


class _Uuid(AbstractType[uuid.UUID]):
    @classmethod
    def encode(cls, value: uuid.UUID) -> bytes:
        return value.bytes

    @classmethod
    def decode(cls, data: BytesIO) -> uuid.UUID:
        raw = data.read(16)
        if len(raw) != 16:
            raise ValueError("Buffer underrun decoding a UUID")
        return uuid.UUID(bytes=raw)


class MetadataResponseV10(Response):
    API_KEY = _METADATA
    API_VERSION = 10
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", _Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_authorized_operations", Int32),
        ("tags", TaggedFields),
    )


class MetadataRequestV10(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = _METADATA
    API_VERSION = 10
    RESPONSE_TYPE = MetadataResponseV10
    SCHEMA = Schema(
        ("topics", CompactArray(("topic_id", _Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdsRequest(Request[MetadataRequestV10]):
    API_KEY = _METADATA

    def __init__(self, names: Iterable[str]) -> None:
        self._names = sorted(names)

    def build(self, request_struct_class: type[MetadataRequestV10]) -> MetadataRequestV10:
        # The nil UUID names a topic by its name alone; never create one by asking about it.
        return request_struct_class([(uuid.UUID(int=0), name, {}) for name in self._names], False, False, False, {})


async def topic_ids(client: AIOKafkaClient, names: Iterable[str]) -> dict[str, uuid.UUID]:
    """The id of each named topic that exists (a topic the broker does not know is left out)."""
    wanted = list(names)
    if not wanted:
        return {}
    node_id = client.get_random_node()
    if node_id is None:
        await client.force_metadata_update()
        node_id = client.get_random_node()
    response: Any = await client.send(node_id, TopicIdsRequest(wanted))
    return {
        name: topic_id
        for error_code, name, topic_id, *_ in response.topics
        if error_code == 0 and name is not None and topic_id.int != 0
    }
