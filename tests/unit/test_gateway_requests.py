"""Pure logic of the gateway: request fingerprints, page tokens, address and body checks."""

from __future__ import annotations

import re
from datetime import UTC

import pytest
from pydantic import ValidationError

from schemas.errors import ErrorCode, HaVipError
from services.gateway.idempotency import Idempotency, check_idempotency_key, in_flight, request_fingerprint
from services.gateway.models import AssociationRequest, CreateHaVipRequest, VrrpEventRequest, check_havip_address
from services.gateway.paging import cut_page, decode_page_token, encode_page_token, numeric_cursor
from services.gateway.waiting import WAIT_PATTERN, parse_wait
from services.runtime.http import describe_validation_errors


def test_a_fingerprint_ignores_key_order_but_not_values_method_or_path() -> None:
    base = request_fingerprint("POST", "/v1/havips", {"vswitch_id": "vsw-1", "name": "web"})
    assert request_fingerprint("post", "/v1/havips", {"name": "web", "vswitch_id": "vsw-1"}) == base
    assert request_fingerprint("POST", "/v1/havips", {"vswitch_id": "vsw-1", "name": "db"}) != base
    assert request_fingerprint("PUT", "/v1/havips", {"vswitch_id": "vsw-1", "name": "web"}) != base
    assert request_fingerprint("POST", "/v1/havips/x", {"vswitch_id": "vsw-1", "name": "web"}) != base
    assert request_fingerprint("POST", "/v1/havips", {"vswitch_id": "vsw-1", "name": "web", "x": None}) != base


@pytest.mark.parametrize("key", ["abc", "a" * 128, "client-token_1.2:3"])
def test_acceptable_idempotency_keys(key: str) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "a" * 129, "with space", "naïve"])
def test_unacceptable_idempotency_keys(key: str) -> None:
    with pytest.raises(HaVipError) as caught:
        check_idempotency_key(key)
    assert caught.value.code == ErrorCode.INVALID_PARAMETER


def test_no_idempotency_key_is_fine() -> None:
    assert check_idempotency_key(None) is None


def test_a_key_replays_only_the_request_it_was_first_used_for() -> None:
    first = Idempotency(key="k-1", request_hash=request_fingerprint("POST", "/v1/havips", {"vswitch_id": "vsw-1"}))
    first.check_replay(first.request_hash)
    with pytest.raises(HaVipError) as refused:
        first.check_replay(request_fingerprint("POST", "/v1/havips", {"vswitch_id": "vsw-2"}))
    assert refused.value.code is ErrorCode.IDEMPOTENT_MISMATCH


def test_a_key_in_flight_is_a_503_to_retry() -> None:
    busy = in_flight()
    assert busy.code is ErrorCode.SERVICE_UNAVAILABLE and busy.retry_after == 1


def test_a_page_token_round_trips_for_the_same_filters() -> None:
    filters = {"vswitch_id": "vsw-1", "status": None, "ip_address": None}
    token = encode_page_token("havip-0007", filters)
    assert decode_page_token(token, dict(filters)) == "havip-0007"
    assert decode_page_token(None, filters) is None
    assert decode_page_token("", filters) is None


def test_a_page_token_is_refused_with_other_filters() -> None:
    token = encode_page_token("havip-0007", {"vswitch_id": "vsw-1"})
    with pytest.raises(HaVipError) as caught:
        decode_page_token(token, {"vswitch_id": "vsw-2"})
    assert caught.value.code == ErrorCode.INVALID_PARAMETER


@pytest.mark.parametrize("token", ["junk!", "bm90IGpzb24", "WzEsMl0", "eyJhIjogMX0"])  # junk, not json, a list, no "f"
def test_a_forged_page_token_is_invalid_parameter(token: str) -> None:
    with pytest.raises(HaVipError) as caught:
        decode_page_token(token, {})
    assert caught.value.code == ErrorCode.INVALID_PARAMETER


def test_a_page_is_cut_from_one_more_row_than_asked() -> None:
    filters = {"vswitch_id": "vsw-1"}
    page, token = cut_page(["h-1", "h-2", "h-3"], 2, str, filters)
    assert page == ["h-1", "h-2"]
    assert token is not None and decode_page_token(token, filters) == "h-2"
    assert cut_page(["h-1", "h-2"], 2, str, filters) == (["h-1", "h-2"], None)
    assert cut_page([], 2, str, filters) == ([], None)


def test_a_numeric_cursor_is_a_number_or_refused() -> None:
    assert numeric_cursor(None) is None
    assert numeric_cursor("42") == 42
    with pytest.raises(HaVipError) as refused:
        numeric_cursor("h-1")
    assert refused.value.code is ErrorCode.INVALID_PARAMETER


def test_havip_addresses_are_ipv4_in_canonical_form() -> None:
    assert check_havip_address("192.168.1.10") == "192.168.1.10"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("2001:db8::1", ErrorCode.IP_VERSION),
        ("::ffff:10.0.0.1", ErrorCode.IP_VERSION),
        ("10.0.0.256", ErrorCode.IP_MALFORMED),
        ("10.0.0.1/32", ErrorCode.IP_MALFORMED),
        ("", ErrorCode.IP_MALFORMED),
        (" 10.0.0.1", ErrorCode.IP_MALFORMED),
    ],
)
def test_other_addresses_are_refused_with_their_reason(value: str, code: ErrorCode) -> None:
    with pytest.raises(HaVipError) as caught:
        check_havip_address(value)
    assert caught.value.code == code
    assert caught.value.http_status == 400


def test_an_association_names_exactly_one_target() -> None:
    assert AssociationRequest(instance_id="i-1").target_id == "i-1"
    assert AssociationRequest(eni_id="eni-1").target_id == "eni-1"
    for wrong in ({}, {"instance_id": "i-1", "eni_id": "eni-1"}):
        with pytest.raises(ValidationError):
            AssociationRequest(**wrong)


def test_a_report_time_without_offset_means_utc() -> None:
    report = VrrpEventRequest(havip_id="h-1", state="MASTER", priority=1, seq=0, reported_at="2024-05-01T10:00:00")
    assert report.reported_at is not None and report.reported_at.tzinfo == UTC


def test_validation_errors_read_as_sentences_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        CreateHaVipRequest(name="x" * 200)  # type: ignore[call-arg]  # vswitch_id left out on purpose
    errors = [{**e, "loc": ("body", *e["loc"])} for e in caught.value.errors()]
    message = describe_validation_errors(errors)
    assert "vswitch_id: Field required" in message
    assert "name:" in message
    assert describe_validation_errors([{"type": "json_invalid", "loc": ("body", 3), "msg": "x"}]) == (
        "the request body is not valid JSON"
    )
    with pytest.raises(ValidationError) as caught:
        AssociationRequest()
    assert "Value error" not in describe_validation_errors(caught.value.errors())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("5", 5.0), ("500ms", 0.5), ("30", 30.0), ("30000ms", 30.0), ("0", 0.0), ("2.5s", 2.5)],
)
def test_wait_accepts_seconds_or_milliseconds_up_to_30s(text: str, seconds: float) -> None:
    assert re.fullmatch(WAIT_PATTERN, text)
    assert parse_wait(text) == seconds


@pytest.mark.parametrize("text", ["31", "30.001s", "30001ms", "5m", "-1", "", "5 s", "1e3"])
def test_wait_refuses_what_its_documented_pattern_refuses(text: str) -> None:
    assert not re.fullmatch(WAIT_PATTERN, text)
    with pytest.raises(HaVipError):
        parse_wait(text)
