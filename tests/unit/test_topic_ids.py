"""The metadata v10 structures of services/runtime/topic_ids.py, written with aiokafka's protocol types.

aiokafka speaks metadata only up to v5, so these are ours; they lean on aiokafka's protocol
module (Request, the compact types). A release that changes those fails here, before a broker
watch that cannot tell a topic made again from the one it replaced.
"""

from __future__ import annotations

import uuid
from io import BytesIO

from services.runtime.topic_ids import MetadataRequestV10, MetadataResponseV10, TopicIdsRequest


def test_the_request_names_topics_by_name_and_never_creates_one() -> None:
    request = TopicIdsRequest(["b", "a"]).prepare({3: (0, 12)})
    assert isinstance(request, MetadataRequestV10) and request.FLEXIBLE_VERSION
    decoded = MetadataRequestV10.SCHEMA.decode(BytesIO(request.encode()))
    topics, allow_auto_topic_creation = decoded[0], decoded[1]
    assert [(topic_id, name) for topic_id, name, _ in topics] == [(uuid.UUID(int=0), "a"), (uuid.UUID(int=0), "b")]
    assert allow_auto_topic_creation is False


def test_a_response_round_trips_with_each_topic_id() -> None:
    topic_id = uuid.uuid4()
    response = MetadataResponseV10(
        0,
        [(1, "127.0.0.1", 9092, None, {})],
        "cluster",
        1,
        [(0, "havip.mappings", topic_id, False, [(0, 0, 1, -1, [1], [1], [], {})], -2147483648, {})],
        -2147483648,
        {},
    )
    decoded = MetadataResponseV10.decode(BytesIO(response.encode()))
    assert decoded.topics[0][1:3] == ("havip.mappings", topic_id)
