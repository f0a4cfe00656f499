"""`havip notify` and the `havip agent`/`notify` command lines (gateway answers from httpx.MockTransport)."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.messages import VrrpState
from services import cli
from services.agent import notify
from services.agent.config import load_config
from services.agent.keepalived import Kind, NameKey
from services.agent.reports import Origin, ReportDraft
from services.agent.sequence import SequenceFile
from services.agent.spool import Spool
from services.runtime import logs

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # notify sets up the process's logging; inside pytest that would replace log capture.
    monkeypatch.setattr(logs, "setup_logging", lambda *args, **kwargs: None)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        'gateway_url = "http://gateway"\ntoken_file = "agent.token"\nspool_dir = "state"\n'
        '[instances]\nVI_1 = "havip-1"\n[groups]\nVG_1 = "havip-g"\n'
    )
    (tmp_path / "agent.token").write_text("tok-agent\n")
    return path


def recording_gateway(status: int = 202) -> tuple[httpx.MockTransport, list[list[dict[str, Any]]]]:
    seen: list[list[dict[str, Any]]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer tok-agent"
        reports = json.loads(request.content)["reports"]
        seen.append(reports)
        if status != 202:
            return httpx.Response(status, json={"code": "ServiceUnavailable", "message": "", "request_id": "r"})
        return httpx.Response(202, json={"results": [{**r, "status": "Accepted", "message_id": "m"} for r in reports]})

    return httpx.MockTransport(answer), seen


def spool_of(config_path: Path) -> Spool:
    config = load_config(config_path)
    return Spool(config.spool_path, SequenceFile(config.sequence_path))


def test_a_master_claim_from_a_notify_script_carries_no_lease(config_path: Path) -> None:
    transport, seen = recording_gateway()
    assert notify.run(config_path, ["INSTANCE", "VI_1", "MASTER", "100"], transport=transport) == 0
    ((report,),) = seen
    assert (report["havip_id"], report["state"], report["priority"], report["lease_seconds"]) == (
        "havip-1",
        "MASTER",
        100,
        None,
    )
    assert spool_of(config_path).is_empty()


def test_notify_sends_what_others_left_in_the_spool_first(config_path: Path) -> None:
    spool = spool_of(config_path)
    # The agent spooled a MASTER claim and is gone: this process cannot vouch for it, so lease 0.
    left = spool.append(ReportDraft("havip-1", VrrpState.MASTER, 100, T0, Origin.FIFO, NameKey(Kind.INSTANCE, "VI_1")))
    transport, seen = recording_gateway()
    assert notify.run(config_path, ["GROUP", "VG_1", "BACKUP", "0"], transport=transport) == 0
    ((first, second),) = seen
    assert (first["seq"], first["lease_seconds"]) == (left.seq, 0.0)
    assert (second["havip_id"], second["state"], second["lease_seconds"]) == ("havip-g", "BACKUP", None)
    assert second["seq"] > first["seq"]


def test_an_unreachable_gateway_still_exits_zero_with_the_report_spooled(config_path: Path) -> None:
    transport, seen = recording_gateway(status=503)
    assert (
        notify.run(config_path, ["INSTANCE", "VI_1", "DELETED", "100"], deliver_seconds=0.5, transport=transport) == 0
    )
    assert seen  # it tried
    (report,) = spool_of(config_path).oldest(16)
    assert (report.state, report.origin) == (VrrpState.STOP, Origin.NOTIFY)


def test_bad_arguments_exit_2_with_a_message(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert notify.run(config_path, ["INSTANCE", "VI_1", "ASLEEP", "100"]) == 2
    assert "expected TYPE NAME STATE PRIORITY" in capsys.readouterr().err
    assert notify.run(config_path, ["INSTANCE", "VI_1"]) == 2
    assert spool_of(config_path).is_empty()


def test_a_bad_config_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('gateway_url = "http://gateway"\n[instances]\nVI_1 = "havip-1"\n')
    assert notify.run(path, ["INSTANCE", "VI_1", "MASTER", "100"]) == 2
    assert "exactly one of token or token_file" in capsys.readouterr().err


def test_a_name_not_configured_is_nothing_to_report(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert notify.run(config_path, ["INSTANCE", "VI_7", "MASTER", "100"]) == 0
    assert "no HAVIP configured" in capsys.readouterr().err
    assert spool_of(config_path).is_empty()


def test_agent_check_prints_the_plan_and_exits_0(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["agent", "--config", str(config_path), "--check"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert 'INSTANCE "VI_1" MASTER 100 -> havip-1 MASTER priority 100 lease 2.5s' in out
    assert f"token: from token_file {config_path.parent / 'agent.token'}" in out
    assert "tok-agent" not in out


def test_agent_check_of_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'gateway_url = "http://gateway"\ntoken = "t"\nrenew_interval_seconds = 5\n[instances]\nA = "havip-1"\n'
    )
    with pytest.raises(SystemExit) as exited:
        cli.main(["agent", "--config", str(path), "--check"])
    assert exited.value.code == 2
    assert "renew_interval_seconds (5.0) must be less than lease_seconds (2.5)" in capsys.readouterr().err


def test_notify_on_the_command_line_takes_keepalived_s_four_arguments(config_path: Path) -> None:
    args = cli.build_parser().parse_args(["notify", "--config", str(config_path), "GROUP", "VG_1", "FAULT", "0"])
    assert (args.type, args.name, args.state, args.priority, args.wait) == ("GROUP", "VG_1", "FAULT", "0", 10.0)
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["notify", "--config", str(config_path), "GROUP", "VG_1"])
    assert exited.value.code == 2
