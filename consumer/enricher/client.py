"""The Claude call: the official ``anthropic`` SDK, with our own retries, deadlines and metrics.

:class:`ClaudeWriter` sends one Messages API request per attempt (the SDK's own retries are off,
``max_retries=0``, so that every attempt and every failure kind is counted here):

============================  ===============  ==============================================
answer                        failure kind     then
============================  ===============  ==============================================
200 with one valid tool call  (none)           done: the validated :class:`EnrichedText`
200, no/invalid tool call     invalid_output   give up: the answer is discarded
200, stop_reason refusal      refused          give up
429                           rate_limited     retry after ``retry-after``/``retry-after-ms``
                                               (give up if that exceeds the cap), else backoff
529                           overloaded       retry with backoff (or after ``retry-after``)
other 5xx                     server_error     retry with backoff (or after ``retry-after``)
no answer within the timeout  timeout          retry with backoff (a 408 too)
network error                 connection       retry with backoff
other 4xx                     client_error     give up (a bad request or key does not improve)
============================  ===============  ==============================================

An ``x-should-retry: true|false`` header from the API overrides the table for that answer.
Backoff is exponential with full jitter, capped; at most ``max_attempts`` attempts. "Give up"
means the insight keeps its rule text (the caller records a fallback with the last kind).
Usage and the estimated cost are counted for every answer that carries usage, the discarded
ones too. The API key is only given to the SDK; nothing here logs it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anthropic
from anthropic.types import Message, MessageParam, ToolUseBlock
from pydantic import ValidationError

from consumer.enricher.metrics import EnricherMetrics
from consumer.enricher.prompt import SYSTEM_BLOCKS, TOOL, TOOL_CHOICE, TOOL_NAME
from consumer.enricher.settings import EnricherSettings
from schemas.enriched_text import EnrichedText

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Random = Callable[[], float]

RETRIABLE = frozenset({"rate_limited", "overloaded", "server_error", "timeout", "connection"})


def deprecated_models() -> Mapping[str, str]:
    """The installed SDK's deprecated models (model -> end of life), if it publishes them."""
    try:
        from anthropic._data import DEPRECATED_MODELS
    except ImportError:  # pragma: no cover - a future SDK may move it
        return {}
    return DEPRECATED_MODELS


def check_model(model: str) -> None:
    """Warn (log) once at start when the configured model is deprecated in the installed SDK."""
    end = deprecated_models().get(model)
    if end is not None:
        logger.warning(
            "model %s is deprecated (end of life %s); set VECTOROS_ENRICH_MODEL to a current model",
            model,
            end,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_input_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )

    @classmethod
    def of(cls, message: Message) -> Usage:
        usage = message.usage
        return cls(
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens or 0,
            usage.cache_creation_input_tokens or 0,
        )


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input: float = 3.0
    output: float = 15.0
    cache_write: float = 3.75
    cache_read: float = 0.30

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * self.cache_write
            + usage.cache_read_input_tokens * self.cache_read
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """The end of one insight's calls: the text, or the failure kind that made us give up."""

    text: EnrichedText | None
    model: str
    usage: Usage
    attempts: int
    cost_usd: float
    failure: str | None = None
    detail: str | None = None


class TextWriter(Protocol):
    """What the service needs: write the text for one context."""

    model: str

    async def write(self, prompt: str) -> CallOutcome: ...


class _Failure(Exception):
    def __init__(
        self,
        kind: str,
        detail: str,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after
        self.should_retry = should_retry  # the API's x-should-retry header, when it sent one


def retry_after_seconds(
    headers: Mapping[str, str] | None, now: float | None = None
) -> float | None:
    """``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date), as seconds."""
    if headers is None:
        return None
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))


def classify(exc: Exception) -> _Failure:
    """An SDK exception as a failure kind (see the module table)."""
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, anthropic.APIResponseValidationError):
        return _Failure("invalid_output", "the answer does not have the Messages API shape")
    if isinstance(exc, TimeoutError | anthropic.APITimeoutError):
        return _Failure("timeout", "no answer within the timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return _Failure("connection", type(exc).__name__)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        detail = f"HTTP {status} {exc.type or ''} request-id={exc.request_id}".strip()
        headers = exc.response.headers
        after = retry_after_seconds(headers)
        hint = {"true": True, "false": False}.get(headers.get("x-should-retry", ""))
        if status == 429:
            return _Failure("rate_limited", detail, after, hint)
        if status == 529:
            return _Failure("overloaded", detail, after, hint)
        if status >= 500:
            return _Failure("server_error", detail, after, hint)
        if status == 408:
            return _Failure("timeout", detail, after, hint)
        return _Failure("client_error", detail, None, hint)
    if isinstance(exc, anthropic.AnthropicError):  # e.g. a credentials problem: not transient
        return _Failure("client_error", type(exc).__name__)
    raise exc  # not the API's: a bug, let it surface


def parse_answer(message: Message) -> EnrichedText:
    """The validated tool input of an answer, or ``_Failure`` (invalid_output / refused)."""
    if message.stop_reason == "refusal":
        raise _Failure("refused", "the model refused")
    if message.stop_reason == "max_tokens":
        raise _Failure("invalid_output", "the answer was cut at max_tokens")
    calls = [b for b in message.content or () if isinstance(b, ToolUseBlock)]
    if len(calls) != 1 or calls[0].name != TOOL_NAME:
        names = ", ".join(b.name for b in calls) or "none"
        raise _Failure("invalid_output", f"expected one {TOOL_NAME} call, got: {names}")
    try:
        return EnrichedText.model_validate(calls[0].input)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        raise _Failure(
            "invalid_output", f"{exc.error_count()} error(s), first: {where}: {first['msg']}"
        ) from None


class ClaudeWriter:
    """:class:`TextWriter` on ``anthropic.AsyncAnthropic`` (see the module docstring)."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        metrics: EnricherMetrics,
        *,
        model: str,
        max_output_tokens: int = 1024,
        timeout: float = 30.0,
        max_attempts: int = 3,
        backoff_base: float = 1.0,
        backoff_cap: float = 20.0,
        retry_after_max: float = 60.0,
        prices: Prices | None = None,
        sleep: Sleep = asyncio.sleep,
        rand: Random = random.random,
    ) -> None:
        self._client = client
        self.metrics = metrics
        self.model = model
        self._max_tokens = max_output_tokens
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._base = backoff_base
        self._cap = backoff_cap
        self._retry_after_max = retry_after_max
        self.prices = prices or Prices()
        self._sleep = sleep
        self._rand = rand

    @classmethod
    def from_settings(
        cls, settings: EnricherSettings, metrics: EnricherMetrics, **kwargs: Any
    ) -> ClaudeWriter:
        key = settings.anthropic_api_key
        if key is None:
            raise ValueError("the enricher needs an API key")
        client = anthropic.AsyncAnthropic(
            api_key=key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            max_retries=0,  # every attempt goes through ClaudeWriter.write (metrics, backoff)
            timeout=settings.enrich_timeout_seconds,
        )
        return cls(
            client,
            metrics,
            model=settings.enrich_model,
            max_output_tokens=settings.enrich_max_output_tokens,
            timeout=settings.enrich_timeout_seconds,
            max_attempts=settings.enrich_max_attempts,
            backoff_base=settings.enrich_backoff_base_seconds,
            backoff_cap=settings.enrich_backoff_cap_seconds,
            retry_after_max=settings.enrich_retry_after_max_seconds,
            prices=Prices(
                settings.enrich_price_input_usd_per_mtok,
                settings.enrich_price_output_usd_per_mtok,
                settings.enrich_price_cache_write_usd_per_mtok,
                settings.enrich_price_cache_read_usd_per_mtok,
            ),
            **kwargs,
        )

    async def close(self) -> None:
        await self._client.close()

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        return self._rand() * min(self._cap, self._base * 2.0 ** min(attempt - 1, 30))

    async def write(self, prompt: str) -> CallOutcome:
        """Up to ``max_attempts`` attempts at answering ``prompt`` (the user message); the
        validated text, or the failure that ended them."""
        usage = Usage()
        model = self.model
        attempt = 0
        while True:
            attempt += 1
            try:
                message = await self._attempt(prompt)
            except Exception as exc:
                failure = classify(exc)
            else:
                model = message.model or model
                used = Usage.of(message)
                usage += used
                self._count_usage(used)
                try:
                    text = parse_answer(message)
                except _Failure as exc:
                    failure = exc
                else:
                    return CallOutcome(text, model, usage, attempt, self.prices.cost(usage))
            self.metrics.failures.labels(kind=failure.kind).inc()
            delay = self._retry_delay(failure, attempt)
            if delay is None:
                logger.warning(
                    "model call gave up after %d attempt(s): %s", attempt, failure.detail
                )
                return CallOutcome(
                    None,
                    model,
                    usage,
                    attempt,
                    self.prices.cost(usage),
                    failure.kind,
                    failure.detail,
                )
            self.metrics.retries.labels(kind=failure.kind).inc()
            logger.info(
                "model call attempt %d failed (%s); retrying in %.2fs",
                attempt,
                failure.detail,
                delay,
            )
            await self._sleep(delay)

    def _retry_delay(self, failure: _Failure, attempt: int) -> float | None:
        """Seconds before the next attempt, or None to give up."""
        retriable = (
            failure.kind in RETRIABLE if failure.should_retry is None else failure.should_retry
        )
        if not retriable or attempt >= self._max_attempts:
            return None
        if failure.retry_after is not None:
            if failure.retry_after > self._retry_after_max:
                return None
            return failure.retry_after
        return self.backoff(attempt)

    async def _attempt(self, prompt: str) -> Message:
        messages: list[MessageParam] = [{"role": "user", "content": prompt}]
        self.metrics.calls.inc()
        started = time.perf_counter()
        # The SDK's timeout bounds connect and each read; this one bounds the whole attempt.
        async with asyncio.timeout(self._timeout):
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=self._max_tokens,
                system=SYSTEM_BLOCKS,
                tools=[TOOL],
                tool_choice=TOOL_CHOICE,
                messages=messages,
                timeout=self._timeout,
            )
        self.metrics.call_seconds.observe(time.perf_counter() - started)
        return message

    def _count_usage(self, usage: Usage) -> None:
        self.metrics.input_tokens.inc(usage.input_tokens)
        self.metrics.output_tokens.inc(usage.output_tokens)
        self.metrics.cache_read_tokens.inc(usage.cache_read_input_tokens)
        self.metrics.cache_write_tokens.inc(usage.cache_creation_input_tokens)
        self.metrics.cost_usd.inc(self.prices.cost(usage))
