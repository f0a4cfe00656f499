"""The agent's TOML configuration: what it accepts, and the error for each mistake."""

from pathlib import Path

import pytest

from services.agent.check import plan
from services.agent.config import ConfigError, load_config
from services.agent.keepalived import Kind, NameKey

GOOD = """
gateway_url = "http://10.0.0.5:8080/"
token = "tok-agent"
spool_dir = "/var/lib/havip-agent"
fifo = "/run/keepalived/havip.fifo"

[instances]
VI_1 = "havip-0123abcd"

[groups]
VG_1 = "havip-89ab"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return str(caught.value)


def test_a_good_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.gateway_url == "http://10.0.0.5:8080"
    assert config.bearer_token == "tok-agent"
    assert (config.lease_seconds, config.renew_interval_seconds, config.request_timeout_seconds) == (2.5, 1.0, 2.0)
    assert config.targets() == {
        NameKey(Kind.INSTANCE, "VI_1"): "havip-0123abcd",
        NameKey(Kind.GROUP, "VG_1"): "havip-89ab",
    }
    assert config.sequence_path == Path("/var/lib/havip-agent/sequence")
    assert config.spool_path == Path("/var/lib/havip-agent/spool")


def test_the_token_may_come_from_a_file_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "agent.token").write_text("tok-from-file\n")
    config = load_config(write(tmp_path, GOOD.replace('token = "tok-agent"', 'token_file = "agent.token"')))
    assert config.bearer_token == "tok-from-file"
    assert config.token_file == tmp_path / "agent.token"
    assert "tok-from-file" not in config.token_source


def test_relative_paths_are_beside_the_config(tmp_path: Path) -> None:
    text = GOOD.replace('"/var/lib/havip-agent"', '"state"').replace('"/run/keepalived/havip.fifo"', '"k.fifo"')
    config = load_config(write(tmp_path, text))
    assert (config.spool_dir, config.fifo) == (tmp_path / "state", tmp_path / "k.fifo")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('token = "tok-agent"', ""), "exactly one of token or token_file"),
        (('token = "tok-agent"', 'token = "a"\ntoken_file = "/x"'), "exactly one of token or token_file"),
        (
            ('token = "tok-agent"', 'token_file = "/nonexistent/agent.token"'),
            "token_file /nonexistent/agent.token cannot be read",
        ),
        (('token = "tok-agent"', 'token = "  "'), "token is empty"),
        (
            ("[instances]", "lease_seconds = 1.0\n[instances]"),
            "renew_interval_seconds (1.0) must be less than lease_seconds (1.0)",
        ),
        (("[instances]", "renew_interval_seconds = 3\n[instances]"), "must be less than lease_seconds"),
        (("[instances]", "lease_seconds = 61\n[instances]"), "lease_seconds"),
        (("[instances]", "lease_seconds = -1\n[instances]"), "lease_seconds"),
        (('"havip-0123abcd"', '"vip-1"'), "instances.VI_1 'vip-1' is not a HAVIP id"),
        (('"havip-89ab"', '"havip-0123abcd"'), "havip-0123abcd is named twice"),
        (('"http://10.0.0.5:8080/"', '"ftp://10.0.0.5"'), "gateway_url"),
        (('"http://10.0.0.5:8080/"', '"10.0.0.5:8080"'), "http:// or https://"),
        (("gateway_url", "gateway_uri"), "gateway_url is required"),
        (("[instances]", "renew_every = 1\n[instances]"), "renew_every is not a known setting"),
        (('VI_1 = "havip-0123abcd"', '"VI 1" = "havip-0123abcd"'), "not a keepalived name"),
    ],
)
def test_each_mistake_names_its_field(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    message = error_of(tmp_path, GOOD.replace(old, new, 1))
    assert expected in message
    assert str(tmp_path / "agent.toml") in message


def test_no_names_at_all_is_an_error(tmp_path: Path) -> None:
    text = 'gateway_url = "https://gw"\ntoken = "t"\n'
    assert "name at least one vrrp_instance" in error_of(tmp_path, text)


def test_groups_alone_are_enough(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'gateway_url = "https://gw"\ntoken = "t"\n[groups]\nVG_1 = "havip-1"\n'))
    assert config.targets() == {NameKey(Kind.GROUP, "VG_1"): "havip-1"}


def test_unreadable_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.toml")
    assert "not valid TOML" in error_of(tmp_path, "gateway_url = ")


def test_the_check_shows_what_a_master_line_would_send_and_never_the_token(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    lines = plan(load_config(path), path)
    text = "\n".join(lines)
    assert 'INSTANCE "VI_1" MASTER 100 -> havip-0123abcd MASTER priority 100 lease 2.5s' in lines
    assert 'GROUP "VG_1" MASTER 0 -> havip-89ab MASTER priority 0 lease 2.5s' in lines
    assert "http://10.0.0.5:8080/v1/vrrp-events" in text
    assert "/run/keepalived/havip.fifo" in text
    assert "tok-agent" not in text


def test_the_check_warns_when_one_lost_renewal_lapses_a_claim(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("[instances]", "lease_seconds = 1.5\n[instances]"))
    assert any(line.startswith("warning:") for line in plan(load_config(path), path))
