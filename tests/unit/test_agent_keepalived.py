"""keepalived's notify lines: every state it writes, and everything it does not."""

import pytest

from schemas.messages import VrrpState
from services.agent.keepalived import KeepalivedEvent, Kind, NameKey, event_from_fields, parse_line


@pytest.mark.parametrize(
    ("raw", "platform"),
    [
        ("MASTER", VrrpState.MASTER),
        ("MASTER_RX_LOWER_PRI", VrrpState.MASTER),
        ("MASTER_PRIORITY", VrrpState.MASTER),
        ("BACKUP", VrrpState.BACKUP),
        ("BACKUP_PRIORITY", VrrpState.BACKUP),
        ("FAULT", VrrpState.FAULT),
        ("STOP", VrrpState.STOP),
        ("DELETED", VrrpState.STOP),
    ],
)
def test_every_keepalived_state_maps_to_a_platform_state(raw: str, platform: VrrpState) -> None:
    event = parse_line(f'INSTANCE "VI_1" {raw} 100\n')
    assert event == KeepalivedEvent(Kind.INSTANCE, "VI_1", raw, 100)
    assert event.state is platform


def test_group_lines_carry_the_group_name_and_its_zero_priority() -> None:
    event = parse_line('GROUP "VG_1" BACKUP 0')
    assert event is not None
    assert event.key == NameKey(Kind.GROUP, "VG_1")
    assert (event.raw_state, event.priority, event.state) == ("BACKUP", 0, VrrpState.BACKUP)


def test_the_name_comes_without_quotes_and_may_hold_punctuation() -> None:
    event = parse_line('INSTANCE "web-vip.1:a" MASTER 255')
    assert event is not None and event.name == "web-vip.1:a" and event.priority == 255


def test_the_line_prints_back_as_keepalived_wrote_it() -> None:
    assert str(parse_line('INSTANCE "VI_1" MASTER_RX_LOWER_PRI 100')) == 'INSTANCE "VI_1" MASTER_RX_LOWER_PRI 100'


def test_instance_and_group_of_the_same_name_are_different_keys() -> None:
    assert NameKey(Kind.INSTANCE, "X") != NameKey(Kind.GROUP, "X")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "   ",
        "garbage",
        'INSTANCE "VI_1" MASTER',  # no priority
        "INSTANCE VI_1 MASTER 100",  # no quotes
        'INSTANCE "VI_1 MASTER 100',  # unbalanced quote
        'INSTANCE "" MASTER 100',  # empty name
        'INSTANCE "VI 1" MASTER 100',  # a blank in the name
        'INSTANCE "VI_1" SLEEPING 100',  # unknown state
        'INSTANCE "VI_1" master 100',  # keepalived writes states in capitals
        'INSTANCE "VI_1" MASTER 256',  # out of range
        'INSTANCE "VI_1" MASTER -1',
        'INSTANCE "VI_1" MASTER 100 extra',
        "VS [192.168.201.15]:tcp:80 UP",  # an LVS line on a shared FIFO
        "RS [1.2.3.4]:tcp:80 [192.168.201.15]:tcp:80 DOWN",
        'INSTANCE "VI_1" MASTER 1e2',
    ],
)
def test_anything_else_is_not_an_event(line: str) -> None:
    assert parse_line(line) is None


def test_surrounding_whitespace_and_a_carriage_return_are_tolerated() -> None:
    assert parse_line('  INSTANCE "VI_1" FAULT 90\r\n') == KeepalivedEvent(Kind.INSTANCE, "VI_1", "FAULT", 90)


def test_notify_script_arguments_make_the_same_event() -> None:
    assert event_from_fields("INSTANCE", "VI_1", "MASTER", "100") == parse_line('INSTANCE "VI_1" MASTER 100')
    assert event_from_fields("GROUP", "VG_1", "STOP", "0") == KeepalivedEvent(Kind.GROUP, "VG_1", "STOP", 0)


@pytest.mark.parametrize(
    "fields",
    [
        ("HOST", "VI_1", "MASTER", "100"),
        ("INSTANCE", "VI 1", "MASTER", "100"),
        ("INSTANCE", "", "MASTER", "100"),
        ("INSTANCE", "VI_1", "UP", "100"),
        ("INSTANCE", "VI_1", "MASTER", "x"),
        ("INSTANCE", "VI_1", "MASTER", "300"),
        ("INSTANCE", "VI_1", "MASTER", "-5"),
    ],
)
def test_bad_notify_arguments_are_not_an_event(fields: tuple[str, str, str, str]) -> None:
    assert event_from_fields(*fields) is None
