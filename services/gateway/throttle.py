"""Request rates per token: a token bucket for each token a gateway replica has seen.

Each replica counts on its own, so N replicas let a token make up to N times
its rate; a tenant's rate is a guard against a runaway client, not a bill.
Only the most recently used tokens are tracked (least recently used evicted
first), so a flood of distinct tokens cannot grow the memory without bound;
an evicted token simply starts again with a full bucket.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.gateway.tokens import Principal
from services.runtime.settings import Settings

DEFAULT_MAX_KEYS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class Throttle:
    """`take(key, rate, burst)` spends one request; `None` when allowed, else seconds to wait.

    The rate and burst are given with every call so a changed tenant rate
    applies on the next request without rebuilding anything.
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, rate: float, burst: int) -> float | None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(burst), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            # max(): a clock that steps back must not drain the bucket.
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(burst), bucket.tokens + elapsed * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate


def request_rate(principal: Principal, settings: Settings) -> tuple[float, int]:
    """The rate and burst for one token: agents share one generous rate, tenants may have their own.

    A tenant with its own rate gets a burst of as many seconds of traffic as
    the default rate and burst allow (40 at 20/s: two seconds).
    """
    if principal.kind == "agent":
        return settings.agent_requests_per_second, settings.agent_request_burst
    if principal.requests_per_second is None:
        return settings.tenant_requests_per_second, settings.tenant_request_burst
    rate = principal.requests_per_second
    seconds = settings.tenant_request_burst / settings.tenant_requests_per_second
    return rate, max(1, round(rate * seconds))
