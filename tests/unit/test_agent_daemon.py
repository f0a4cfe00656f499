"""The agent daemon's bookkeeping: lines to spooled reports, the writer going, config reloads.

The last test runs the whole daemon against a real FIFO with the gateway's
answers from httpx.MockTransport, to watch renewals and the lease rules in
the requests it sends; tests/integration/test_agent.py runs it against the
real gateway.
"""

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.messages import VrrpState
from services.agent.agent import Agent
from services.agent.claims import LastState
from services.agent.config import load_config
from services.agent.fifo import FifoLine, WriterGone
from services.agent.keepalived import Kind, NameKey

VI_1 = NameKey(Kind.INSTANCE, "VI_1")
VI_2 = NameKey(Kind.INSTANCE, "VI_2")


def config_text(tmp_path: Path, names: str = 'VI_1 = "havip-1"\nVI_2 = "havip-2"', **settings: Any) -> str:
    values = {"lease_seconds": 2.5, "renew_interval_seconds": 1.0, **settings}
    return (
        f'gateway_url = "http://gateway"\ntoken = "tok-agent"\nspool_dir = "{tmp_path / "state"}"\n'
        f'fifo = "{tmp_path / "havip.fifo"}"\n'
        + "".join(f"{key} = {value}\n" for key, value in values.items())
        + f"[instances]\n{names}\n"
    )


def make_agent(tmp_path: Path, transport: httpx.AsyncBaseTransport | None = None, **settings: Any) -> Agent:
    path = tmp_path / "agent.toml"
    path.write_text(config_text(tmp_path, **settings))
    return Agent(path, load_config(path), transport=transport)


def rewrite(agent: Agent, text: str) -> None:
    agent.config_path.write_text(text)
    later = time.time() + 5  # a new mtime even on filesystems with coarse timestamps
    os.utime(agent.config_path, (later, later))


def line(text: str) -> FifoLine:
    return FifoLine(text, time.time())


def spooled(agent: Agent) -> list[tuple[str, VrrpState, float | None]]:
    return [(r.havip_id, r.state, agent._lease(r)) for r in agent.spool.oldest(100)]


def test_a_configured_line_is_spooled_and_becomes_the_latest_state(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    agent.on_line(line('INSTANCE "VI_1" MASTER 100'))
    (report,) = agent.spool.oldest(16)
    assert (report.havip_id, report.state, report.priority, report.key) == ("havip-1", VrrpState.MASTER, 100, VI_1)
    assert agent.states[VI_1] == LastState(VrrpState.MASTER, 100, "havip-1", report.seq)
    assert agent.writer_connected
    assert spooled(agent) == [("havip-1", VrrpState.MASTER, 2.5)]


def test_a_newer_line_turns_the_spooled_claim_into_history(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    agent.on_line(line('INSTANCE "VI_1" MASTER 100'))
    agent.on_line(line('INSTANCE "VI_1" BACKUP 100'))
    assert spooled(agent) == [("havip-1", VrrpState.MASTER, 0.0), ("havip-1", VrrpState.BACKUP, None)]


def test_lines_for_other_names_and_garbage_spool_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent = make_agent(tmp_path)
    with caplog.at_level("INFO"):
        agent.on_line(line('INSTANCE "VI_9" MASTER 100'))
        agent.on_line(line("garbage"))
        agent.on_line(line(""))
    assert agent.spool.is_empty()
    assert agent.states == {NameKey(Kind.INSTANCE, "VI_9"): LastState(VrrpState.MASTER, 100)}
    assert 'fifo line="INSTANCE \\"VI_9\\" MASTER 100" read_at=' in caplog.text
    assert "not configured kind=INSTANCE name=VI_9" in caplog.text


def test_when_keepalived_goes_spooled_claims_lose_their_lease(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    agent.on_line(line('INSTANCE "VI_1" MASTER 100'))
    agent.on_writer_gone(WriterGone(time.time()))
    assert not agent.writer_connected
    assert spooled(agent) == [("havip-1", VrrpState.MASTER, 0.0)]


async def test_removing_a_master_havip_from_the_config_spools_stop(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    agent.on_line(line('INSTANCE "VI_1" MASTER 100'))
    agent.on_line(line('INSTANCE "VI_2" BACKUP 90'))
    rewrite(agent, config_text(tmp_path, names='VI_2 = "havip-2"'))
    await agent.reload_if_changed()
    assert spooled(agent)[-1] == ("havip-1", VrrpState.STOP, None)
    assert len(agent.spool) == 3  # BACKUP needs no withdrawal
    assert agent.states[VI_1].havip_id is None
    assert agent.config.targets() == {VI_2: "havip-2"}


async def test_a_name_moved_to_another_havip_reports_there_at_once(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    agent.on_line(line('INSTANCE "VI_1" MASTER 100'))
    rewrite(agent, config_text(tmp_path, names='VI_1 = "havip-9"'))
    await agent.reload_if_changed()
    assert spooled(agent) == [
        ("havip-1", VrrpState.MASTER, 0.0),
        ("havip-1", VrrpState.STOP, None),
        ("havip-9", VrrpState.MASTER, 2.5),
    ]
    assert agent.states[VI_1].havip_id == "havip-9"


async def test_sighup_reloads_even_when_the_mtime_did_not_change(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    agent.on_line(line('INSTANCE "VI_1" MASTER 100'))
    stat = agent.config_path.stat()
    agent.config_path.write_text(config_text(tmp_path, names='VI_2 = "havip-2"'))
    os.utime(agent.config_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    await agent.reload_if_changed()
    assert len(agent.spool) == 1
    agent.request_reload()
    await agent.reload_if_changed()
    assert spooled(agent)[-1] == ("havip-1", VrrpState.STOP, None)


async def test_a_broken_config_is_not_applied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent = make_agent(tmp_path)
    agent.on_line(line('INSTANCE "VI_1" MASTER 100'))
    rewrite(agent, "gateway_url = ")
    await agent.reload_if_changed()
    assert "config reload failed" in caplog.text
    assert agent.config.targets()[VI_1] == "havip-1" and len(agent.spool) == 1


async def test_the_daemon_renews_while_master_and_stops_when_keepalived_goes(tmp_path: Path) -> None:
    requests: list[list[dict[str, Any]]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        reports = json.loads(request.content)["reports"]
        requests.append(reports)
        return httpx.Response(202, json={"results": [{**r, "status": "Accepted", "message_id": "m"} for r in reports]})

    agent = make_agent(tmp_path, httpx.MockTransport(gateway), lease_seconds=0.3, renew_interval_seconds=0.05)
    running = asyncio.create_task(agent.run())
    try:
        writer = await _writer(agent.config.fifo)
        os.write(writer, b'INSTANCE "VI_1" MASTER 100\nINSTANCE "VI_2" BACKUP 90\n')
        await _until(lambda: len(requests) >= 4)
        first = requests[0]
        assert [(r["havip_id"], r["state"], r["lease_seconds"]) for r in first] == [
            ("havip-1", "MASTER", 0.3),
            ("havip-2", "BACKUP", None),
        ]
        renewals = requests[1:4]
        assert all(
            [(r["havip_id"], r["state"], r["lease_seconds"]) for r in batch] == [("havip-1", "MASTER", 0.3)]
            for batch in renewals
        )
        seqs = [r["seq"] for batch in requests[:4] for r in batch]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        os.close(writer)  # keepalived killed
        await _until(lambda: not agent.writer_connected)
        settled = len(requests)
        await asyncio.sleep(0.3)
        assert len(requests) == settled, "no renewals once keepalived has gone"

        writer = await _writer(agent.config.fifo)
        os.write(writer, b'INSTANCE "VI_2" BACKUP 90\n')
        await _until(lambda: len(requests) > settled)
        await asyncio.sleep(0.2)
        assert [[r["state"] for r in batch] for batch in requests[settled:]] == [["BACKUP"]], "VI_1 waits for MASTER"
        os.write(writer, b'INSTANCE "VI_1" MASTER 100\n')
        await _until(lambda: len(requests) >= settled + 3)
        os.close(writer)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert agent.spool.is_empty()


async def _writer(path: Path) -> int:
    for _ in range(400):
        with contextlib.suppress(FileNotFoundError, OSError):
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        await asyncio.sleep(0.005)
    raise AssertionError("the agent never opened the FIFO")


async def _until(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
