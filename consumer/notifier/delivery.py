"""The delivery policy: rate limits, retries with backoff, and what counts as a failure.

Pure apart from the injected clock, sleep and random functions, so the unit tests run the whole
policy instantly (a fake clock whose ``sleep`` just advances time).

- **Rate limit** (:class:`RateLimiter`): at least ``min_interval`` seconds from the end of one
  request to the start of the next, per destination (Slack allows about one message per second
  per incoming webhook; counting from the end makes it hold at the server too). A 429
  pushes the destination's next slot out by its ``Retry-After``, so the retry *and* the
  following messages wait.
- **Retries** (:func:`deliver`): HTTP 429 waits ``Retry-After`` seconds (seconds or an HTTP
  date; capped exponential backoff when absent; a demand above ``retry_after_max`` fails the
  notification instead of stalling the stream). 5xx and network errors are retried after a
  capped exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**(retry-1)))``.
  Every other 4xx (and 3xx: webhooks are never redirected) is permanent: recorded, never retried.
  At most ``max_attempts`` HTTP attempts per notification, then it is recorded as failed.
- **Ambiguous outcomes**: a network error *after* the request may have reached the server (read
  timeout, connection dropped before the response, our per-attempt deadline) means the message
  may have been delivered. With ``at_most_once`` (Slack by default) that is recorded as failed
  with kind ``unknown_outcome`` and never repeated; otherwise (signed webhooks: receivers dedupe
  on ``webhook-id``) it is retried like any transient error. Connect-phase errors (refused,
  connect timeout, pool timeout) are unambiguous: nothing was sent, so they are always retried.
- **Circuit breaker** (:class:`CircuitBreaker`): after ``threshold`` consecutive notifications
  to one destination exhausted their retries, notifications to it fail at once (kind
  ``circuit_open``, recorded) for ``open_seconds``, so a dead destination costs one retry budget,
  not one per message, and cannot hold the batch (and the other destinations' commits) for long.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httpx

from vectoros.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Random = Callable[[], float]

FailureKind = Literal[
    "permanent", "exhausted", "rate_limited", "unknown_outcome", "circuit_open", "invalid"
]

_MAX_ERROR_TEXT = 300


# ---------------------------------------------------------------------------------------------
# Errors of one HTTP attempt


class HttpRejected(PermanentDeliveryError):
    """A non-retriable HTTP answer (4xx other than 429, unexpected 3xx/1xx)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}{': ' + detail if detail else ''}")
        self.status_code = status_code


class InvalidDestination(PermanentDeliveryError):
    """The request cannot be made at all (bad URL, unsupported scheme)."""


class HttpRetriable(TransientDeliveryError):
    """HTTP 429 or 5xx: the server did not process the message; try again later."""

    def __init__(self, status_code: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status_code}{': ' + detail if detail else ''}")
        self.status_code = status_code
        self.retry_after = retry_after


class NetworkFailure(TransientDeliveryError):
    """No HTTP answer. ``ambiguous``: the request may have reached the server anyway."""

    def __init__(self, detail: str, *, ambiguous: bool) -> None:
        super().__init__(detail)
        self.ambiguous = ambiguous


def status_code_of(error: BaseException) -> int | None:
    code = getattr(error, "status_code", None)
    return code if isinstance(code, int) else None


def error_text(error: BaseException) -> str:
    """A short, single-line description of an error, for logs and the notification log."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    text = " ".join(text.split())
    return text[:_MAX_ERROR_TEXT]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (wall clock, epoch seconds); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def check_response(response: httpx.Response, now: float) -> None:
    """Raise the delivery error an HTTP answer means; return for 2xx."""
    code = response.status_code
    if 200 <= code < 300:
        return
    detail = " ".join(response.text[:200].split())
    if code == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        raise HttpRetriable(code, detail, retry_after)
    if code >= 500:
        raise HttpRetriable(code, detail)
    raise HttpRejected(code, detail)


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    deadline: float,
    wall_clock: Clock,
) -> httpx.Response:
    """POST ``body`` once; translate every outcome into success (the 2xx response) or a
    delivery error.

    ``deadline`` (seconds) bounds the whole attempt (connect, send, wait, read). Error texts never
    contain ``url`` (it is a secret).
    """
    request_headers = {"content-type": "application/json", **headers}
    try:
        async with asyncio.timeout(deadline):
            response = await http.post(url, content=body, headers=request_headers)
    except TimeoutError:
        raise NetworkFailure(f"no answer within {deadline:g} s", ambiguous=True) from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise NetworkFailure(f"{type(exc).__name__}: {exc}", ambiguous=False) from None
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
        raise InvalidDestination(type(exc).__name__) from None
    except httpx.RequestError as exc:  # read/write errors, dropped connections: maybe delivered
        raise NetworkFailure(f"{type(exc).__name__}: {exc}", ambiguous=True) from None
    check_response(response, wall_clock())
    return response


# ---------------------------------------------------------------------------------------------
# Destination identity: never the URL itself


def destination_key(kind: str, url: str) -> str:
    """A stable id for a destination: SHA-256 of its type and URL (not reversible to the URL)."""
    return hashlib.sha256(f"{kind}\n{url}".encode()).hexdigest()


def redact_url(kind: str, url: str) -> str:
    """What may appear in logs for a destination: type, host and a key prefix, e.g.
    ``slack:hooks.slack.com#3fa2c1d9``. Path, query and user info (the secret parts) are dropped.
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    where = f"{host}:{port}" if port is not None else host
    return f"{kind}:{where}#{destination_key(kind, url)[:8]}"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    retry_after_max_seconds: float = 120.0

    def backoff(self, retry: int, rand: Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(retry-1))); ``retry`` counts from 1."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0 ** min(max(0, retry - 1), 62))
        return rand() * ceiling


class RateLimiter:
    """Spacing between requests per destination key, with a clock and sleep injected."""

    def __init__(self, clock: Clock, sleep: Sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}

    def delay(self, key: str) -> float:
        return max(0.0, self._next.get(key, -math.inf) - self._clock())

    async def acquire(self, key: str) -> None:
        """Wait until a request to ``key`` is allowed."""
        while (wait := self.delay(key)) > 0:
            await self._sleep(wait)

    def release(self, key: str, min_interval: float) -> None:
        """A request to ``key`` just ended: the next one waits ``min_interval`` from now.

        Counting from the end of a request (not its start) makes the spacing hold as seen by
        the server too, whatever the network delays.
        """
        self.defer(key, min_interval)

    def defer(self, key: str, seconds: float) -> None:
        """No request to ``key`` before ``seconds`` from now (a 429's Retry-After)."""
        self._next[key] = max(self._next.get(key, -math.inf), self._clock() + seconds)


class CircuitBreaker:
    """Opens after ``threshold`` consecutive exhausted notifications, for ``open_seconds``.

    After the open period one notification is tried with the full retry budget (half-open);
    if that is exhausted too the circuit opens again at once, a success closes it.
    """

    def __init__(self, threshold: int, open_seconds: float, clock: Clock) -> None:
        self._threshold = threshold
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._open_until = -math.inf

    @property
    def is_open(self) -> bool:
        return self._clock() < self._open_until

    def record_success(self) -> None:
        self._failures = 0
        self._open_until = -math.inf

    def record_exhausted(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._open_seconds
            self._failures = self._threshold - 1  # half-open: one more failure reopens


# ---------------------------------------------------------------------------------------------
# One notification


class AttemptHooks(Protocol):
    """What :func:`deliver` reports around each HTTP attempt (the notification log)."""

    async def begin_attempt(self) -> bool:
        """Called right before an attempt; False means the claim was lost: stop, send nothing."""
        ...

    async def attempt_failed(self, error: DeliveryError) -> None:
        """A transient failure that will be retried (or given up on by the caller)."""
        ...


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Literal["sent", "failed", "lost_claim"]
    attempts: int
    kind: FailureKind | None = None
    status_code: int | None = None
    error: str | None = None


async def deliver(
    send: Callable[[], Awaitable[None]],
    *,
    key: str,
    min_interval: float,
    at_most_once: bool,
    policy: RetryPolicy,
    limiter: RateLimiter,
    hooks: AttemptHooks,
    sleep: Sleep,
    rand: Random,
    on_retry: Callable[[], None] | None = None,
) -> DeliveryResult:
    """Send one notification under the policy. Errors of ``hooks`` (the database) propagate, as
    does whatever ``sleep`` raises (the service's sleep raises when it is asked to stop)."""
    attempts = 0
    while True:
        await limiter.acquire(key)
        if not await hooks.begin_attempt():
            return DeliveryResult("lost_claim", attempts)
        attempts += 1
        try:
            try:
                await send()
            finally:
                limiter.release(key, min_interval)
        except PermanentDeliveryError as exc:
            return DeliveryResult(
                "failed", attempts, "permanent", status_code_of(exc), error_text(exc)
            )
        except TransientDeliveryError as exc:
            code, text = status_code_of(exc), error_text(exc)
            if at_most_once and isinstance(exc, NetworkFailure) and exc.ambiguous:
                return DeliveryResult("failed", attempts, "unknown_outcome", None, text)
            retry_after = exc.retry_after if isinstance(exc, HttpRetriable) else None
            if retry_after is not None and retry_after > policy.retry_after_max_seconds:
                return DeliveryResult("failed", attempts, "rate_limited", code, text)
            if attempts >= policy.max_attempts:
                return DeliveryResult("failed", attempts, "exhausted", code, text)
            await hooks.attempt_failed(exc)
            if on_retry is not None:
                on_retry()
            if retry_after is not None:
                limiter.defer(key, retry_after)  # the next acquire() waits it out
            else:
                await sleep(policy.backoff(attempts, rand))
            continue
        return DeliveryResult("sent", attempts)
