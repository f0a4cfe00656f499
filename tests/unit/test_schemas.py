"""The contract in schemas/ stays in one piece."""

import json

import pytest
from pydantic import ValidationError

from schemas import messages as m
from schemas import topics
from schemas.export import SCHEMA_DIR, render


@pytest.mark.parametrize("topic", topics.ALL, ids=lambda t: t.name)
def test_exported_json_schema_matches_the_models(topic: topics.Topic) -> None:
    exported = (SCHEMA_DIR / f"{topic.name}.json").read_text()
    assert exported == render(topic), f"run `python -m schemas.export`: {topic.name}.json is stale"


def test_a_record_without_its_envelope_is_refused() -> None:
    good = topics.encode(m.AttachHaVip(command_id="op-1", tenant_id="t", havip_id="h", target_id="i"))
    for field in m.ENVELOPE:
        record = {k: v for k, v in json.loads(good).items() if k != field}
        with pytest.raises(ValidationError):
            topics.COMMANDS.parse(json.dumps(record).encode())


def test_every_message_round_trips_through_its_topic() -> None:
    command = m.AttachHaVip(command_id="op-1", tenant_id="t", havip_id="havip-1", target_id="i-1")
    assert topics.COMMANDS.parse(topics.encode(command)) == command


def test_a_message_of_another_topic_is_refused() -> None:
    report = m.CommandSucceeded(
        command_id="op-1", tenant_id="t", havip_id="havip-1", command_type="AttachHaVip", stage="mapping"
    )
    with pytest.raises(ValidationError):
        topics.COMMANDS.parse(topics.encode(report))


def test_unknown_fields_and_schema_versions_are_refused() -> None:
    good = topics.encode(m.AttachHaVip(command_id="op-1", tenant_id="t", havip_id="h", target_id="i"))
    with pytest.raises(ValidationError):
        topics.COMMANDS.parse(good.replace(b'"schema_version":1', b'"schema_version":2'))
    with pytest.raises(ValidationError):
        topics.COMMANDS.parse(good[:-1] + b',"surprise":true}')
