"""`havip agent`: keepalived's FIFO in, numbered reports and renewals out.

Two tasks share one state. The reader turns each FIFO line into a spooled
report and records keepalived's state; the sender drains the spool oldest
first, and on every tick renews the live MASTER claims (only when the spool
is empty) and picks up a changed configuration. Spooling and recording
happen in one step of the event loop, with no await between them, so the
sender never sees a report the state does not know about yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from schemas.messages import MAX_REPORTS_PER_REQUEST, VrrpState
from services.agent import fifo
from services.agent.claims import LastState, lease_for, reconcile, renewals_due, writer_gone
from services.agent.config import AgentConfig, ConfigError, load_config
from services.agent.delivery import Backoff, Drain, Gateway, Outcome, RetryLater, drain, log_refusals
from services.agent.keepalived import NameKey, parse_line
from services.agent.reports import Origin, ReportDraft, SpooledReport
from services.agent.sequence import SequenceFile
from services.agent.spool import Spool

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self, config_path: Path, config: AgentConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.sequence = SequenceFile(config.sequence_path)
        self.spool = Spool(config.spool_path, self.sequence)
        self.states: dict[NameKey, LastState] = {}
        self.writer_connected = False
        self._transport = transport  # tests serve the gateway in-process
        self._config_mtime = _mtime(config_path)
        self._reload_requested = False
        self._wake = asyncio.Event()
        self._backoff = Backoff()
        self._renewals_failing = False
        self._refused_renewals: dict[str, str] = {}  # havip_id -> code, logged once
        self._client: httpx.AsyncClient | None = None
        self._gateway: Gateway | None = None

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled; the spool stays on disk for the next run."""
        fifo.ensure_fifo(self.config.fifo)  # a bad path fails here, before anything starts
        self.spool.sweep_temporary()
        self._connect()
        log.info(
            "agent started gateway=%s fifo=%s spool=%s pending=%d names=%s",
            self.config.gateway_url,
            self.config.fifo,
            self.spool.directory,
            len(self.spool),
            ",".join(f"{key.kind}:{key.name}={havip}" for key, havip in self.config.targets().items()),
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read_fifo(), name="fifo")
                tasks.create_task(self._send(), name="sender")
        finally:
            if self._client is not None:
                await self._client.aclose()

    # --- the reader ------------------------------------------------------

    async def _read_fifo(self) -> None:
        async for event in fifo.follow(self.config.fifo):
            if isinstance(event, fifo.WriterGone):
                self.on_writer_gone(event)
            else:
                self.on_line(event)

    def on_line(self, line: fifo.FifoLine) -> None:
        # read_at is what failover measurements start from: keep it on this line, to the microsecond.
        log.info("fifo line=%s read_at=%.6f", json.dumps(line.text), line.read_at)
        self.writer_connected = True
        event = parse_line(line.text)
        if event is None:
            if line.text.strip():
                log.warning("fifo line not understood line=%s; skipped", json.dumps(line.text))
            return
        havip_id = self.config.targets().get(event.key)
        if havip_id is None:
            log.info(
                "keepalived name not configured kind=%s name=%s state=%s; ignored",
                event.kind,
                event.name,
                event.raw_state,
            )
            self.states[event.key] = LastState(event.state, event.priority)
            return
        reported_at = datetime.fromtimestamp(line.read_at, UTC)
        draft = ReportDraft(havip_id, event.state, event.priority, reported_at, Origin.FIFO, event.key)
        report = self._spool(draft)
        self.states[event.key] = LastState(event.state, event.priority, havip_id, report.seq if report else None)
        self._wake.set()

    def on_writer_gone(self, gone: fifo.WriterGone) -> None:
        log.warning(
            "fifo writer gone read_at=%.6f unterminated=%s; renewals stop until keepalived reports MASTER again",
            gone.read_at,
            json.dumps(gone.unterminated),
        )
        self.writer_connected = False
        self.states = writer_gone(self.states)

    def _spool(self, draft: ReportDraft) -> SpooledReport | None:
        try:
            report = self.spool.append(draft)
        except OSError as exc:
            # A full or read-only disk must not stop the agent: renewals still carry a live claim.
            log.error("report not spooled havip=%s state=%s error=%s", draft.havip_id, draft.state, exc)
            return None
        log.info("report spooled %s", report.describe())
        return report

    # --- the sender ------------------------------------------------------

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        retry_at = 0.0
        while True:
            self._wake.clear()
            tick = loop.time() >= next_tick
            if tick:
                next_tick = max(next_tick + self.config.renew_interval_seconds, loop.time())
            try:
                if loop.time() >= retry_at and not self.spool.is_empty():
                    outcome, delay = await drain(self.spool, self._connected(), self._lease, self._backoff)
                    retry_at = loop.time() + delay if outcome is not Drain.EMPTY else 0.0
                if tick or self._reload_requested:
                    await self.reload_if_changed()
                if tick and self.spool.is_empty():
                    await self._unless_woken(self._renew())
            except OSError as exc:
                # The spool or the sequence file could not be read or written (a full disk, say):
                # keep running, keepalived's next line or the next tick tries again.
                log.error("spool or sequence unavailable error=%s", exc)
            wake_at = next_tick if self.spool.is_empty() else min(next_tick, retry_at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - loop.time()))

    async def _unless_woken(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work`, abandoning it if keepalived reports something first.

        A renewal stuck on a slow gateway must not hold back the report of a
        transition; the renewal is worth nothing once keepalived has spoken.
        """
        task = asyncio.create_task(work)
        woken = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({task, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not task.done():
                task.cancel()
                log.info("renewal abandoned: keepalived reported a new state")
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _lease(self, report: SpooledReport) -> float | None:
        return lease_for(report, self.states, self.writer_connected, self.config.lease_seconds)

    async def _renew(self) -> None:
        """Renewals are never spooled: one that arrived late would claim what is no longer known to be true."""
        due = renewals_due(self.states, self.config.targets(), self.writer_connected, spool_empty=True)
        if not due:
            return
        now = datetime.now(UTC)
        seqs = self.sequence.reserve(len(due))
        reports = [
            ReportDraft(r.havip_id, VrrpState.MASTER, r.priority, now, Origin.FIFO, r.key).numbered(seq)
            for r, seq in zip(due, seqs, strict=True)
        ]
        for start in range(0, len(reports), MAX_REPORTS_PER_REQUEST):
            items = [
                report.wire(self.config.lease_seconds) for report in reports[start : start + MAX_REPORTS_PER_REQUEST]
            ]
            result = await self._connected().send(items)
            if isinstance(result, RetryLater):
                if not self._renewals_failing:
                    log.warning("renewal failed reason=%r; dropped, the next one follows", result.reason)
                self._renewals_failing = True
                return
            if self._renewals_failing:
                log.info("renewals delivered again")
            self._renewals_failing = False
            self._note_renewal_outcomes(result.outcomes)

    def _note_renewal_outcomes(self, outcomes: list[Outcome]) -> None:
        # A refused renewal is refused again every tick: say so when it starts, not every second.
        for outcome in outcomes:
            if outcome.accepted:
                self._refused_renewals.pop(outcome.havip_id, None)
                log.debug("renewal delivered havip=%s seq=%s", outcome.havip_id, outcome.seq)
            elif self._refused_renewals.get(outcome.havip_id) != outcome.code:
                self._refused_renewals[outcome.havip_id] = outcome.code
                log_refusals([outcome], "renewal")

    async def reload_if_changed(self) -> None:
        mtime = _mtime(self.config_path)
        if not self._reload_requested and mtime == self._config_mtime:
            return
        self._reload_requested = False
        self._config_mtime = mtime
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config reload failed error=%s; keeping the previous configuration", exc)
            return
        if (new.fifo, new.spool_dir) != (self.config.fifo, self.config.spool_dir):
            log.warning("config reload: fifo and spool_dir take effect at the next start")
            new = new.model_copy(update={"fifo": self.config.fifo, "spool_dir": self.config.spool_dir})
        reconnect = (new.gateway_url, new.bearer_token, new.request_timeout_seconds) != (
            self.config.gateway_url,
            self.config.bearer_token,
            self.config.request_timeout_seconds,
        )
        drafts, self.states = reconcile(self.states, new.targets(), self.writer_connected, datetime.now(UTC))
        self.config = new
        for draft in drafts:
            report = self._spool(draft)
            if report is not None and new.targets().get(draft.key) == draft.havip_id:
                self.states[draft.key] = replace(self.states[draft.key], havip_id=draft.havip_id, seq=report.seq)
        if reconnect:
            await self._disconnect()
            self._connect()
        log.info("config reloaded names=%d reports=%d", len(new.targets()), len(drafts))
        self._wake.set()

    def _connect(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.config.gateway_url, timeout=self.config.request_timeout_seconds, transport=self._transport
        )
        self._gateway = Gateway(self._client, self.config.bearer_token)

    def _connected(self) -> Gateway:
        assert self._gateway is not None, "run() connects first"
        return self._gateway

    async def _disconnect(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
