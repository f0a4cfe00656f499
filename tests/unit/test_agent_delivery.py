"""What the gateway's answers mean, backoff, and draining the spool (httpx.MockTransport, no network)."""

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.messages import VrrpState
from services.agent.delivery import (
    MAX_RETRY_AFTER,
    Answered,
    Backoff,
    Drain,
    Gateway,
    Outcome,
    RetryLater,
    drain,
    retry_after_seconds,
    verdict,
)
from services.agent.keepalived import Kind, NameKey
from services.agent.reports import Origin, ReportDraft, SpooledReport
from services.agent.sequence import SequenceFile
from services.agent.spool import Spool

SENT = [{"havip_id": "havip-a", "seq": 1}, {"havip_id": "havip-b", "seq": 2}]
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def accepted(item: dict[str, Any]) -> dict[str, Any]:
    return {"havip_id": item["havip_id"], "seq": item["seq"], "status": "Accepted", "message_id": "m"}


# --- verdict ---------------------------------------------------------------


def test_per_report_results_are_matched_in_order() -> None:
    body = {
        "results": [
            accepted(SENT[0]),
            {"havip_id": "havip-b", "seq": 2, "status": "Refused", "code": "VrrpReport.NotAttached", "message": "no"},
        ]
    }
    assert verdict(202, body, SENT) == Answered(
        [Outcome("havip-a", 1, True), Outcome("havip-b", 2, False, "VrrpReport.NotAttached", "no")]
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_a_whole_request_refused_for_good_refuses_every_report(status: int) -> None:
    body = {"code": "Unauthorized", "message": "bad token", "request_id": "r"}
    assert verdict(status, body, SENT) == Answered(
        [
            Outcome("havip-a", 1, False, "Unauthorized", "bad token"),
            Outcome("havip-b", 2, False, "Unauthorized", "bad token"),
        ]
    )


def test_a_refusal_without_an_error_body_still_names_the_status() -> None:
    result = verdict(413, None, SENT)
    assert isinstance(result, Answered) and result.outcomes[0].code == "HTTP413"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_overload_and_server_errors_mean_retry(status: int) -> None:
    assert isinstance(verdict(status, {"code": "ServiceUnavailable"}, SENT), RetryLater)


def test_429_honours_retry_after() -> None:
    assert verdict(429, None, SENT, {"retry-after": "3"}) == RetryLater("status 429", 3.0)


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"message_id": "m"},  # the single-report answer: it does not say which report counted
        {"results": []},
        {"results": [accepted(SENT[0])]},
        {"results": [accepted(SENT[0]), {"status": "Maybe"}]},
        {"results": "nope"},
    ],
)
def test_a_2xx_without_one_result_per_report_is_retried(body: Any) -> None:
    assert isinstance(verdict(202, body, SENT), RetryLater)


def test_retry_after_takes_seconds_or_a_date_and_is_capped() -> None:
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds("100000") == MAX_RETRY_AFTER
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds("Wed, 25 Nov 2026 10:00:05 GMT", now=now) == pytest.approx(5.0)
    assert retry_after_seconds("Wed, 25 Nov 2026 09:00:00 GMT", now=now) == 0.0


# --- backoff ---------------------------------------------------------------


def test_backoff_doubles_from_a_fifth_of_a_second_to_ten_seconds() -> None:
    backoff = Backoff(uniform=lambda: 1.0)
    assert [backoff.failed() for _ in range(8)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0])
    backoff.succeeded()
    assert backoff.failed() == pytest.approx(0.2)


def test_backoff_jitter_spans_zero_to_the_ceiling() -> None:
    assert Backoff(uniform=lambda: 0.0).failed() == 0.0
    half = Backoff(uniform=lambda: 0.5)
    half.failed()
    assert half.failed() == pytest.approx(0.2)


def test_retry_after_is_a_floor_under_the_jitter() -> None:
    assert Backoff(uniform=lambda: 0.5).failed(retry_after=4.0) == 4.0


# --- the gateway client and draining the spool ----------------------------


Handler = Callable[[httpx.Request], httpx.Response]


def gateway_answering(handler: Handler) -> tuple[Gateway, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/vrrp-events"
        assert request.headers["authorization"] == "Bearer tok-agent"
        seen.append(json.loads(request.content))
        return handler(request)

    client = httpx.AsyncClient(base_url="http://gateway", transport=httpx.MockTransport(record))
    return Gateway(client, "tok-agent"), seen


def accept_all(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"results": [accepted(r) for r in json.loads(request.content)["reports"]]})


def filled_spool(tmp_path: Path, count: int, state: VrrpState = VrrpState.BACKUP) -> tuple[Spool, list[SpooledReport]]:
    spool = Spool(tmp_path / "spool", SequenceFile(tmp_path / "sequence"))
    key = NameKey(Kind.INSTANCE, "VI_1")
    return spool, [spool.append(ReportDraft("havip-a", state, 100, T0, Origin.FIFO, key)) for _ in range(count)]


def no_lease(report: SpooledReport) -> float | None:
    return None


async def test_the_spool_goes_oldest_first_sixteen_at_a_time(tmp_path: Path) -> None:
    spool, reports = filled_spool(tmp_path, 20)
    gateway, seen = gateway_answering(accept_all)
    assert await drain(spool, gateway, no_lease, Backoff()) == (Drain.EMPTY, 0.0)
    assert [len(body["reports"]) for body in seen] == [16, 4]
    assert [item["seq"] for body in seen for item in body["reports"]] == [r.seq for r in reports]
    assert spool.is_empty()


async def test_a_refused_report_is_logged_loudly_and_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool, reports = filled_spool(tmp_path, 2)

    def refuse_first(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["reports"]
        refused = {**items[0], "status": "Refused", "code": "NotFound.HaVip", "message": "no such HAVIP"}
        return httpx.Response(202, json={"results": [refused, accepted(items[1])]})

    gateway, seen = gateway_answering(refuse_first)
    with caplog.at_level(logging.INFO):
        assert (await drain(spool, gateway, no_lease, Backoff()))[0] is Drain.EMPTY
    assert len(seen) == 1 and spool.is_empty()
    (loud,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud.levelno == logging.ERROR
    assert f"havip=havip-a seq={reports[0].seq} code=NotFound.HaVip" in loud.getMessage()
    assert "no such HAVIP" in loud.getMessage()


async def test_a_request_refused_for_good_drops_the_batch_and_moves_on(tmp_path: Path) -> None:
    spool, _ = filled_spool(tmp_path, 3)
    gateway, seen = gateway_answering(
        lambda request: httpx.Response(401, json={"code": "Unauthorized", "message": "revoked", "request_id": "r"})
    )
    assert (await drain(spool, gateway, no_lease, Backoff()))[0] is Drain.EMPTY
    assert len(seen) == 1 and spool.is_empty()


def unavailable(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"code": "ServiceUnavailable", "message": "later", "request_id": "r"})


def too_many(request: httpx.Request) -> httpx.Response:
    return httpx.Response(429, headers={"Retry-After": "7"})


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def too_slow(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no answer", request=request)


@pytest.mark.parametrize("failure", [unavailable, too_many, unreachable, too_slow])
async def test_a_gateway_that_cannot_take_it_now_leaves_the_spool_alone(tmp_path: Path, failure: Handler) -> None:
    spool, reports = filled_spool(tmp_path, 2)
    gateway, seen = gateway_answering(failure)
    outcome, delay = await drain(spool, gateway, no_lease, Backoff(uniform=lambda: 1.0))
    assert outcome is Drain.RETRY and delay > 0
    assert spool.oldest(16) == reports
    assert len(seen) == 1


async def test_retry_after_sets_the_wait(tmp_path: Path) -> None:
    spool, _ = filled_spool(tmp_path, 1)
    gateway, _ = gateway_answering(lambda request: httpx.Response(429, headers={"Retry-After": "7"}))
    assert await drain(spool, gateway, no_lease, Backoff(uniform=lambda: 0.0)) == (Drain.RETRY, 7.0)


async def test_the_lease_is_decided_when_the_request_is_built(tmp_path: Path) -> None:
    spool, reports = filled_spool(tmp_path, 2, VrrpState.MASTER)
    live = {reports[1].seq}
    gateway, seen = gateway_answering(accept_all)
    await drain(spool, gateway, lambda r: 2.5 if r.seq in live else 0.0, Backoff())
    assert [item["lease_seconds"] for item in seen[0]["reports"]] == [0.0, 2.5]


async def test_someone_else_delivering_means_busy(tmp_path: Path) -> None:
    spool, reports = filled_spool(tmp_path, 1)
    gateway, seen = gateway_answering(accept_all)
    with Spool(tmp_path / "spool", spool.sequence).delivering():
        outcome, delay = await drain(spool, gateway, no_lease, Backoff())
    assert outcome is Drain.BUSY and delay > 0
    assert seen == [] and spool.oldest(16) == reports
