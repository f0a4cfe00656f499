"""The per-token request limiter: bursts, refill, Retry-After, and bounded memory."""

from __future__ import annotations

import pytest

from services.gateway.throttle import Throttle, request_rate
from services.gateway.tokens import Principal
from services.runtime.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_full_bucket_allows_the_burst_then_refuses(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    assert all(throttle.take("tok-a", rate=2, burst=5) is None for _ in range(5))
    assert throttle.take("tok-a", rate=2, burst=5) == pytest.approx(0.5)


def test_retry_after_is_the_time_until_one_request_is_available(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    assert throttle.take("tok-a", rate=4, burst=1) is None
    clock.now += 0.1  # 0.4 of a request refilled
    assert throttle.take("tok-a", rate=4, burst=1) == pytest.approx(0.15)
    # A refused request spends nothing: waiting exactly that long is enough.
    clock.now += 0.15
    assert throttle.take("tok-a", rate=4, burst=1) is None


def test_the_bucket_refills_at_the_rate_up_to_the_burst(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    for _ in range(3):
        throttle.take("tok-a", rate=1, burst=3)
    assert throttle.take("tok-a", rate=1, burst=3) is not None
    clock.now += 2.0
    assert throttle.take("tok-a", rate=1, burst=3) is None
    assert throttle.take("tok-a", rate=1, burst=3) is None
    assert throttle.take("tok-a", rate=1, burst=3) is not None
    clock.now += 3600  # a long pause refills to the burst, no more
    assert [throttle.take("tok-a", rate=1, burst=3) is None for _ in range(4)] == [True, True, True, False]


def test_a_steady_rate_at_the_limit_is_never_refused(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    for _ in range(1000):
        assert throttle.take("tok-agent", rate=50, burst=100) is None
        clock.now += 1 / 50


def test_tokens_are_counted_apart(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    assert throttle.take("tok-a", rate=1, burst=1) is None
    assert throttle.take("tok-a", rate=1, burst=1) is not None
    assert throttle.take("tok-b", rate=1, burst=1) is None


def test_a_clock_stepping_back_does_not_drain_the_bucket(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    assert throttle.take("tok-a", rate=1, burst=2) is None
    clock.now -= 100
    assert throttle.take("tok-a", rate=1, burst=2) is None


def test_memory_is_bounded_and_the_least_recently_used_token_goes_first(clock: Clock) -> None:
    throttle = Throttle(max_keys=3, clock=clock)
    for key in ("tok-1", "tok-2", "tok-3"):
        assert throttle.take(key, rate=1, burst=1) is None
    assert throttle.take("tok-1", rate=1, burst=1) is not None  # tok-1 is now the most recently used
    throttle.take("tok-4", rate=1, burst=1)
    assert len(throttle) == 3
    # tok-2 was evicted (a fresh, full bucket); tok-1 was kept (still empty).
    assert throttle.take("tok-2", rate=1, burst=1) is None
    assert throttle.take("tok-1", rate=1, burst=1) is not None
    for n in range(10_000):
        throttle.take(f"tok-flood-{n}", rate=1, burst=1)
    assert len(throttle) == 3


def test_a_changed_rate_applies_on_the_next_request(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    for _ in range(2):
        throttle.take("tok-a", rate=1, burst=2)
    clock.now += 0.5
    assert throttle.take("tok-a", rate=1, burst=2) is not None  # half a request refilled
    clock.now += 0.1  # at 1/s this would be 0.6 of a request; at 10/s it is 1.5
    assert throttle.take("tok-a", rate=10, burst=20) is None


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Throttle(max_keys=0)
    with pytest.raises(ValueError):
        Throttle().take("tok-a", rate=0, burst=1)


def test_rates_by_kind_of_token() -> None:
    settings = Settings(
        tenant_requests_per_second=20, tenant_request_burst=40, agent_requests_per_second=50, agent_request_burst=100
    )
    assert request_rate(Principal("agent", "t", "i-1", "tok-a"), settings) == (50, 100)
    # An agent's tenant rate does not slow its renewals.
    assert request_rate(Principal("agent", "t", "i-1", "tok-a", requests_per_second=1), settings) == (50, 100)
    assert request_rate(Principal("tenant", "t", None, "tok-t"), settings) == (20, 40)
    # A tenant's own rate keeps the default's two seconds of burst.
    assert request_rate(Principal("tenant", "t", None, "tok-t", requests_per_second=5), settings) == (5, 10)
    assert request_rate(Principal("tenant", "t", None, "tok-t", requests_per_second=0.1), settings) == (0.1, 1)
