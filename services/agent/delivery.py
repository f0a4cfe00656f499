"""Sending reports to the gateway: what its answers mean, when to try again, draining the spool.

Every answer falls in one of two buckets, decided by `verdict()`:

    Answered: the gateway has spoken for each report
      ├── Accepted   (202, per report)  delivered; drop it from the spool
      └── Refused    (202 per report, or any other 4xx for the request: 400/401/403/404/409/413/422)
                     it can never count; log loudly and drop it, never retry
    RetryLater: nothing is known about any report
      └── connection error, timeout, 408, 429 (Retry-After honoured), 5xx, a malformed 2xx
"""

from __future__ import annotations

import email.utils
import enum
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from schemas.messages import MAX_REPORTS_PER_REQUEST
from services.agent.files import LockBusy
from services.agent.reports import SpooledReport
from services.agent.spool import Spool

log = logging.getLogger(__name__)

# The longest a Retry-After may hold us back; a report is worth less the older it gets.
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Outcome:
    havip_id: str
    seq: int
    accepted: bool
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class Answered:
    outcomes: list[Outcome]


@dataclass(frozen=True)
class RetryLater:
    reason: str
    retry_after: float | None = None


Verdict = Answered | RetryLater


def verdict(status: int, body: Any, sent: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> Verdict:
    """What the gateway's answer to `sent` means for each report in it."""
    headers = headers or {}
    if 200 <= status < 300:
        return _per_report(status, body, sent)
    if status in (408, 429) or status >= 500:
        return RetryLater(f"status {status}", retry_after_seconds(headers.get("retry-after")))
    if 400 <= status < 500:
        # 400/401/403/404/409/413/422 and the like condemn the whole request: sending it
        # again can only get the same answer, and a stuck spool would hold back every later report.
        code, message = _error_fields(body, status)
        return Answered([Outcome(r["havip_id"], r["seq"], False, code, message) for r in sent])
    return RetryLater(f"unexpected status {status}")


def _per_report(status: int, body: Any, sent: list[dict[str, Any]]) -> Verdict:
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != len(sent):
        # Without one result per report we cannot tell which ones count; sending again is safe
        # because the gateway ignores a seq it has already applied.
        return RetryLater(f"status {status} without one result per report")
    outcomes: list[Outcome] = []
    for report, result in zip(sent, results, strict=True):
        if not isinstance(result, dict) or result.get("status") not in ("Accepted", "Refused"):
            return RetryLater(f"status {status} with a malformed result")
        accepted = result["status"] == "Accepted"
        code = "" if accepted else str(result.get("code") or "Refused")
        outcomes.append(Outcome(report["havip_id"], report["seq"], accepted, code, str(result.get("message") or "")))
    return Answered(outcomes)


def _error_fields(body: Any, status: int) -> tuple[str, str]:
    if isinstance(body, dict) and "code" in body:
        return str(body["code"]), str(body.get("message", ""))
    return f"HTTP{status}", "the gateway refused the request"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - current), MAX_RETRY_AFTER)


class Backoff:
    """Exponential backoff with full jitter: a random wait up to base * 2**failures, capped.

    Full jitter spreads the retries of many agents that lost the gateway at the
    same moment, instead of having them all come back together.
    """

    def __init__(self, base: float = 0.2, cap: float = 10.0, uniform: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._uniform = uniform

    def failed(self, retry_after: float | None = None) -> float:
        """How long to wait before the next attempt."""
        ceiling = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        delay = self._uniform() * ceiling
        return max(delay, retry_after) if retry_after is not None else delay

    def succeeded(self) -> None:
        self.failures = 0


class Gateway:
    """`POST /v1/vrrp-events` with the agent's token; one attempt per call."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}"}

    async def send(self, items: list[dict[str, Any]]) -> Verdict:
        try:
            answer = await self._client.post("/v1/vrrp-events", json={"reports": items}, headers=self._headers)
        except httpx.TimeoutException:
            return RetryLater("timeout")
        except httpx.TransportError as exc:
            return RetryLater(f"{type(exc).__name__}: {exc}")
        try:
            body = answer.json()
        except ValueError:
            body = None
        return verdict(answer.status_code, body, items, answer.headers)


def log_refusals(outcomes: list[Outcome], what: str) -> None:
    for outcome in outcomes:
        if not outcome.accepted:
            # Loud on purpose: a refused report never counts, and usually means the HAVIP id or
            # the attachment is wrong, which only the tenant can fix.
            log.error(
                "%s refused havip=%s seq=%s code=%s message=%r",
                what,
                outcome.havip_id,
                outcome.seq,
                outcome.code,
                outcome.message,
            )


class Drain(enum.Enum):
    EMPTY = "empty"  # everything spooled has been answered for
    RETRY = "retry"  # the gateway could not take it now; see Backoff
    BUSY = "busy"  # another process is delivering this spool


async def drain(
    spool: Spool, gateway: Gateway, lease: Callable[[SpooledReport], float | None], backoff: Backoff
) -> tuple[Drain, float]:
    """Send the spool oldest first until it is empty or the gateway fails; the float is the wait before retrying.

    Each request is built from the spool as it is at that moment, and each
    lease decided then, so a claim keepalived has since given up goes out
    with lease 0 even if it was spooled while it was true.
    """
    try:
        with spool.delivering():
            while batch := spool.oldest(MAX_REPORTS_PER_REQUEST):
                items = [report.wire(lease(report)) for report in batch]
                result = await gateway.send(items)
                if isinstance(result, RetryLater):
                    delay = backoff.failed(result.retry_after)
                    log.warning("delivery failed reason=%r pending=%d retry_in=%.2fs", result.reason, len(spool), delay)
                    return Drain.RETRY, delay
                backoff.succeeded()
                log_refusals(result.outcomes, "report")
                for report, item, outcome in zip(batch, items, result.outcomes, strict=True):
                    if outcome.accepted:
                        log.info("report delivered %s lease=%s", report.describe(), item["lease_seconds"])
                spool.remove(batch)
    except LockBusy:
        return Drain.BUSY, 0.1
    return Drain.EMPTY, 0.0
