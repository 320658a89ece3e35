"""The delivery policy with an injected clock: 429/Retry-After, 5xx backoff, 4xx, rate limit."""

from __future__ import annotations

import email.utils
from collections.abc import Callable

import httpx
import pytest

from consumer.notifier.delivery import (
    CircuitBreaker,
    DeliveryResult,
    HttpRejected,
    HttpRetriable,
    NetworkFailure,
    RateLimiter,
    RetryPolicy,
    check_response,
    deliver,
    destination_key,
    parse_retry_after,
    redact_url,
)
from vectoros.errors import DeliveryError
from vectoros.logs import scrub


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Hooks:
    def __init__(self, allow: bool = True) -> None:
        self.allow = allow
        self.begun = 0
        self.failures: list[DeliveryError] = []

    async def begin_attempt(self) -> bool:
        self.begun += 1
        return self.allow

    async def attempt_failed(self, error: DeliveryError) -> None:
        self.failures.append(error)


class Server:
    """Answers scripted responses (or raises), recording the fake time of each request."""

    def __init__(self, clock: FakeClock, script: list[httpx.Response | Exception]) -> None:
        self.clock = clock
        self.script = list(script)
        self.times: list[float] = []

    async def __call__(self) -> None:
        self.times.append(self.clock())
        step = self.script.pop(0) if self.script else httpx.Response(200)
        if isinstance(step, Exception):
            raise step
        check_response(step, now=1_700_000_000.0)


async def run(
    script: list[httpx.Response | Exception],
    *,
    policy: RetryPolicy | None = None,
    at_most_once: bool = False,
    min_interval: float = 0.0,
    rand: Callable[[], float] = lambda: 0.5,
    hooks: Hooks | None = None,
) -> tuple[DeliveryResult, FakeClock, Server, Hooks]:
    clock = FakeClock()
    server = Server(clock, script)
    hooks = hooks or Hooks()
    retries: list[int] = []
    result = await deliver(
        server,
        key="dest",
        min_interval=min_interval,
        at_most_once=at_most_once,
        policy=policy or RetryPolicy(max_attempts=5, base_seconds=0.5, cap_seconds=30),
        limiter=RateLimiter(clock, clock.sleep),
        hooks=hooks,
        sleep=clock.sleep,
        rand=rand,
        on_retry=lambda: retries.append(1),
    )
    assert len(retries) == len(hooks.failures)
    return result, clock, server, hooks


async def test_429_waits_retry_after_then_delivers() -> None:
    result, clock, server, hooks = await run(
        [httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200)]
    )
    assert result.outcome == "sent"
    assert result.attempts == 2
    assert server.times[1] - server.times[0] >= 2.0
    assert sum(clock.sleeps) >= 2.0
    assert [getattr(f, "status_code", None) for f in hooks.failures] == [429]


async def test_429_with_an_http_date() -> None:
    later = email.utils.formatdate(1_700_000_000.0 + 5, usegmt=True)
    result, _, server, _ = await run(
        [httpx.Response(429, headers={"Retry-After": later}), httpx.Response(200)]
    )
    assert result.outcome == "sent"
    assert server.times[1] - server.times[0] >= 5.0


async def test_429_without_retry_after_backs_off() -> None:
    result, clock, _, _ = await run([httpx.Response(429), httpx.Response(200)])
    assert result.outcome == "sent"
    assert clock.sleeps == [0.25]  # rand 0.5 x min(cap, 0.5 * 2**0)


async def test_429_demanding_too_long_fails_instead_of_stalling() -> None:
    result, clock, server, _ = await run(
        [httpx.Response(429, headers={"Retry-After": "3600"})],
        policy=RetryPolicy(retry_after_max_seconds=120),
    )
    assert result.outcome == "failed"
    assert result.kind == "rate_limited"
    assert result.status_code == 429
    assert len(server.times) == 1
    assert clock.sleeps == []


async def test_500_is_retried_with_capped_full_jitter_backoff() -> None:
    result, clock, server, hooks = await run(
        [httpx.Response(500), httpx.Response(502), httpx.Response(503), httpx.Response(200)],
        policy=RetryPolicy(max_attempts=5, base_seconds=1.0, cap_seconds=3.0),
        rand=lambda: 0.999,
    )
    assert result.outcome == "sent"
    assert result.attempts == 4
    assert len(server.times) == 4
    # ceilings 1, 2, 4 -> capped to 3; full jitter stays below the ceiling
    assert clock.sleeps == pytest.approx([0.999, 1.998, 2.997])
    assert [getattr(f, "status_code", None) for f in hooks.failures] == [500, 502, 503]


async def test_5xx_exhausts_after_max_attempts() -> None:
    result, _, server, hooks = await run(
        [httpx.Response(500)] * 10, policy=RetryPolicy(max_attempts=3)
    )
    assert result.outcome == "failed"
    assert result.kind == "exhausted"
    assert result.status_code == 500
    assert result.attempts == 3
    assert len(server.times) == 3
    assert len(hooks.failures) == 2  # the last failure is the caller's to record


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 413])
async def test_4xx_is_permanent_and_never_retried(code: int) -> None:
    result, clock, server, hooks = await run([httpx.Response(code, text="channel_not_found")])
    assert result.outcome == "failed"
    assert result.kind == "permanent"
    assert result.status_code == code
    assert result.attempts == 1
    assert result.error is not None
    assert f"HTTP {code}" in result.error
    assert len(server.times) == 1
    assert clock.sleeps == []
    assert hooks.failures == []


async def test_unambiguous_network_errors_are_retried_even_at_most_once() -> None:
    result, _, server, _ = await run(
        [NetworkFailure("ConnectError", ambiguous=False), httpx.Response(200)], at_most_once=True
    )
    assert result.outcome == "sent"
    assert len(server.times) == 2


async def test_ambiguous_network_error_at_most_once_is_not_repeated() -> None:
    result, _, server, _ = await run(
        [NetworkFailure("ReadTimeout", ambiguous=True), httpx.Response(200)], at_most_once=True
    )
    assert result.outcome == "failed"
    assert result.kind == "unknown_outcome"
    assert len(server.times) == 1


async def test_ambiguous_network_error_at_least_once_is_retried() -> None:
    result, _, server, _ = await run(
        [NetworkFailure("ReadTimeout", ambiguous=True), httpx.Response(200)], at_most_once=False
    )
    assert result.outcome == "sent"
    assert len(server.times) == 2


async def test_a_lost_claim_sends_nothing() -> None:
    result, _, server, hooks = await run([httpx.Response(200)], hooks=Hooks(allow=False))
    assert result.outcome == "lost_claim"
    assert server.times == []
    assert hooks.begun == 1


async def test_rate_limiter_spaces_requests_per_destination() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, clock.sleep)
    times: dict[str, list[float]] = {"a": [], "b": []}
    for key in ["a", "a", "b", "a", "b"]:
        await limiter.acquire(key)
        times[key].append(clock())
        clock.now += 0.5  # the request takes a while
        limiter.release(key, 1.0)
    # spacing counts from the end of the previous request
    assert all(y - x >= 1.5 for x, y in zip(times["a"], times["a"][1:], strict=False))
    assert all(y - x >= 1.5 for x, y in zip(times["b"], times["b"][1:], strict=False))
    limiter.defer("a", 5.0)
    start = clock()
    await limiter.acquire("a")
    assert clock() - start >= 5.0


async def test_retry_after_also_delays_the_next_message() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, clock.sleep)
    server = Server(clock, [httpx.Response(429, headers={"Retry-After": "3"})])
    common = {
        "key": "slack",
        "min_interval": 1.0,
        "at_most_once": True,
        "policy": RetryPolicy(),
        "limiter": limiter,
        "sleep": clock.sleep,
        "rand": lambda: 0.5,
    }
    await deliver(server, hooks=Hooks(), **common)  # type: ignore[arg-type]
    await deliver(server, hooks=Hooks(), **common)  # type: ignore[arg-type]
    assert len(server.times) == 3
    assert server.times[1] - server.times[0] >= 3.0
    assert server.times[2] - server.times[1] >= 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        (email.utils.formatdate(1_700_000_010.0, usegmt=True), 10.0),
        (email.utils.formatdate(1_699_999_990.0, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, 1_700_000_000.0) == expected


@pytest.mark.parametrize("retry", range(1, 12))
def test_backoff_stays_under_the_capped_ceiling(retry: int) -> None:
    policy = RetryPolicy(base_seconds=0.5, cap_seconds=30.0)
    ceiling = min(30.0, 0.5 * 2 ** (retry - 1))
    assert policy.backoff(retry, lambda: 0.0) == 0.0
    assert policy.backoff(retry, lambda: 0.999999) < ceiling
    assert policy.backoff(retry, lambda: 0.5) == pytest.approx(ceiling / 2)


def test_circuit_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, open_seconds=60, clock=clock)
    breaker.record_exhausted()
    assert not breaker.is_open
    breaker.record_exhausted()
    assert breaker.is_open
    clock.now += 61
    assert not breaker.is_open  # half-open: one more try
    breaker.record_exhausted()
    assert breaker.is_open  # failed again: open at once
    clock.now += 61
    breaker.record_success()
    breaker.record_exhausted()
    assert not breaker.is_open


def test_check_response_accepts_2xx() -> None:
    for code in (200, 201, 202, 204):
        check_response(httpx.Response(code), now=0)
    with pytest.raises(HttpRetriable):
        check_response(httpx.Response(500), now=0)
    with pytest.raises(HttpRejected):
        check_response(httpx.Response(400), now=0)


def test_destination_identity_never_contains_the_url() -> None:
    url = "https://user:pw@hooks.slack.com:8443/services/T0/B0/SECRETTOKEN?x=1"
    key = destination_key("slack", url)
    assert len(key) == 64
    assert key == destination_key("slack", url)
    assert key != destination_key("webhook", url)
    label = redact_url("slack", url)
    assert label == f"slack:hooks.slack.com:8443#{key[:8]}"
    for secret in ("SECRETTOKEN", "services", "pw", "user"):
        assert secret not in label
    assert scrub(f"failed for {url}!", [url]) == "failed for ***!"
