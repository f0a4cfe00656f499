"""The small HTTP client behind `havip havips`: one request with its retries, paging, waiting.

Every failure a command can meet, in one place:

    ClientError                 anything that ends a command with exit status 3
    ├── ApiError                the gateway answered 4xx/5xx: {code, message, request_id}
    │                           (429 and 503 are retried first, honouring Retry-After)
    └── GatewayUnreachable      no answer: connection refused, DNS, timeout

A mutation carries one Idempotency-Key for all of its attempts, so a request
the gateway accepted but whose answer was lost, or that was throttled and sent
again, acts at most once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from services.agent.delivery import retry_after_seconds
from services.client.config import ClientConfig

RETRIED_STATUSES = frozenset({429, 503})
DEFAULT_RETRIES = 4
# A throttled command should not hang a terminal for minutes; past this the user decides.
MAX_RETRY_DELAY = 30.0
# The gateway holds `?wait=` at most 30 s; 5 s keeps each request well inside proxies' idle timeouts.
OPERATION_HOLD_SECONDS = 5
# Between polls when the gateway answers at once (it has no `?wait=`, or the wait ended early).
MIN_POLL_INTERVAL = 0.2
TERMINAL = frozenset({"Succeeded", "Failed"})


class ClientError(Exception):
    """A command failed before it got an answer it could show."""


class ApiError(ClientError):
    """The gateway's error answer."""

    def __init__(self, status: int, code: str, message: str, request_id: str) -> None:
        super().__init__(f"{code}: {message} (request_id {request_id})")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Read `{code, message, request_id}`; a proxy's HTML page still gives a usable error."""
        try:
            body = response.json()
        except ValueError:
            body = None
        request_id = response.headers.get("x-request-id", "-")
        if isinstance(body, dict) and "code" in body:
            return cls(
                response.status_code,
                str(body["code"]),
                str(body.get("message", "")),
                str(body.get("request_id") or request_id),
            )
        return cls(response.status_code, f"HTTP{response.status_code}", response.reason_phrase, request_id)


class GatewayUnreachable(ClientError):
    """No HTTP answer at all."""


class OperationTimeout(ClientError):
    """The operation was still Pending when --wait-timeout ran out."""

    def __init__(self, operation: dict[str, Any], waited: float) -> None:
        super().__init__(f"operation {operation.get('operation_id')} still {operation.get('status')} after {waited:g}s")
        self.operation = operation


def path(*parts: str) -> str:
    """`/v1/...` with each id quoted, so an id with `/` or `?` cannot name another resource."""
    return "/v1/" + "/".join(quote(part, safe="") for part in parts)


class Gateway:
    """Requests to the gateway as one tenant; `call()` retries 429/503 with the same Idempotency-Key."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        retries: int = DEFAULT_RETRIES,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = httpx.Client(
            base_url=config.gateway_url,
            headers={"Authorization": f"Bearer {config.token}", "Accept": "application/json"},
            transport=transport,
            timeout=timeout,
        )
        self._url = config.gateway_url
        self._retries = retries
        self._sleep = sleep
        self._clock = clock

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def call(
        self,
        method: str,
        url: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The decoded JSON answer of a 2xx; raises ApiError or GatewayUnreachable."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        for attempt in range(self._retries + 1):
            try:
                response = self._http.request(method, url, json=body, params=query, headers=headers, **extra)
            except httpx.TimeoutException as exc:
                lost = self._lost(f"no answer from the gateway at {self._url}", idempotency_key)
                raise GatewayUnreachable(lost) from exc
            except httpx.TransportError as exc:
                why = str(exc) or type(exc).__name__
                raise GatewayUnreachable(f"cannot reach the gateway at {self._url}: {why}") from exc
            if response.status_code in RETRIED_STATUSES and attempt < self._retries:
                self._sleep(self.retry_delay(response, attempt))
                continue
            if response.is_error:
                raise ApiError.from_response(response)
            if response.status_code == 204 or not response.content:
                return {}
            try:
                return response.json()
            except ValueError as exc:
                raise ClientError(f"the gateway answered {response.status_code} with a body that is not JSON") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def retry_delay(response: httpx.Response, attempt: int) -> float:
        """Retry-After when the gateway gives one, else 0.5 s doubling; never more than MAX_RETRY_DELAY."""
        told = retry_after_seconds(response.headers.get("retry-after"))
        return min(told if told is not None else 0.5 * 2**attempt, MAX_RETRY_DELAY)

    @staticmethod
    def _lost(what: str, idempotency_key: str | None) -> str:
        if idempotency_key is None:
            return what
        # The request may have been applied; only the same key makes a second try safe.
        return f"{what}; it may have acted: repeat the command with --idempotency-key {idempotency_key} to be safe"

    def pages(self, url: str, items: str, params: dict[str, Any], max_items: int | None = None) -> Iterator[Any]:
        """Every item of a paged list, following next_page_token, stopping after max_items."""
        token: str | None = None
        count = 0
        while True:
            page = self.call("GET", url, params={**params, "page_token": token})
            for item in page.get(items, []):
                if max_items is not None and count >= max_items:
                    return
                count += 1
                yield item
            token = page.get("next_page_token")
            if not token or (max_items is not None and count >= max_items):
                return

    def wait_operation(self, operation: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Poll until the operation is Succeeded or Failed; OperationTimeout after `timeout` seconds."""
        started = self._clock()
        url = path("operations", operation["operation_id"])
        while operation.get("status") not in TERMINAL:
            remaining = timeout - (self._clock() - started)
            if remaining <= 0:
                raise OperationTimeout(operation, timeout)
            hold = max(1, min(OPERATION_HOLD_SECONDS, int(remaining)))
            asked = self._clock()
            # The HTTP timeout must outlast the hold, or every held request would fail.
            operation = self.call("GET", url, params={"wait": f"{hold}s"}, timeout=hold + 15.0)
            if operation.get("status") not in TERMINAL and self._clock() - asked < MIN_POLL_INTERVAL:
                self._sleep(min(MIN_POLL_INTERVAL, max(0.0, timeout - (self._clock() - started))))
        return operation
