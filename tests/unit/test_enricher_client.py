"""The Claude call through the real ``anthropic`` SDK against the local fake Messages API:
the wire format, retries (429 with retry-after, 529, 5xx, timeouts), what is not retried, the
validation of the tool result, and the metrics each case leaves."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from prometheus_client import CollectorRegistry

from consumer.enricher.client import (
    ClaudeWriter,
    Prices,
    Usage,
    check_model,
    deprecated_models,
    retry_after_seconds,
)
from consumer.enricher.metrics import EnricherMetrics
from consumer.enricher.prompt import SYSTEM_PROMPT, TOOL_NAME, user_message
from consumer.enricher.settings import DEFAULT_MODEL
from tests.fake_anthropic import (
    API_KEY,
    FakeAnthropic,
    Reply,
    invalid_tool_input,
    overloaded,
    rate_limited,
    server_error,
    slow,
)

CONTEXT: dict[str, Any] = {
    "deal": {"title": "Acme renewal", "company": "Acme", "value": 48000.0, "currency": "EUR"},
    "alert": {
        "rule": "stale_deal",
        "priority": "high",
        "key_metrics": {"days_inactive": 12.0, "threshold_days": 7},
    },
    "other_open_alerts": [],
}
PROMPT = user_message(CONTEXT)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.m = EnricherMetrics(self.registry)

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(f"vectoros_enricher_{name}", labels)
        return found or 0.0


@pytest.fixture
async def writer(fake: FakeAnthropic) -> AsyncIterator[tuple[ClaudeWriter, Metrics]]:
    metrics = Metrics()
    client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    w = ClaudeWriter(
        client,
        metrics.m,
        model=DEFAULT_MODEL,
        timeout=0.5,
        max_attempts=3,
        backoff_base=0.01,
        backoff_cap=0.05,
        retry_after_max=5.0,
        prices=Prices(input=3.0, output=15.0, cache_write=3.75, cache_read=0.3),
    )
    try:
        yield w, metrics
    finally:
        await w.close()


async def test_a_tool_answer_is_validated_and_counted(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    outcome = await w.write(PROMPT)
    assert outcome.failure is None
    assert outcome.text is not None
    assert outcome.text.title.startswith("Claude: Acme")
    assert "days inactive 12.0" in outcome.text.description
    assert outcome.model == DEFAULT_MODEL
    assert outcome.attempts == 1
    assert outcome.usage.input_tokens > 0
    assert outcome.usage.output_tokens == 180
    assert outcome.usage.cache_creation_input_tokens > 0  # the first request writes the cache
    assert metrics.value("calls_total") == 1
    assert metrics.value("output_tokens_total") == 180
    assert metrics.value("estimated_cost_usd_total") == pytest.approx(outcome.cost_usd)
    assert outcome.cost_usd == pytest.approx(Prices().cost(outcome.usage))
    second = await w.write(PROMPT)
    assert second.usage.cache_read_input_tokens == outcome.usage.cache_creation_input_tokens
    assert metrics.value("cache_read_input_tokens_total") > 0


async def test_the_request_on_the_wire(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, _ = writer
    await w.write(PROMPT)
    [seen] = fake.requests
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["anthropic-version"]
    body = seen.body
    assert body["model"] == DEFAULT_MODEL
    # the system prompt is fixed text, marked for prompt caching
    assert body["system"] == [
        {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
    ]
    [tool] = body["tools"]
    assert tool["name"] == TOOL_NAME
    assert tool["strict"] is True
    assert tool["input_schema"]["type"] == "object"
    assert tool["input_schema"]["additionalProperties"] is False
    assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    assert seen.crm_data() == json.loads(json.dumps(CONTEXT))


async def test_429_waits_for_retry_after_then_succeeds(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    fake.script = [rate_limited("0.4")]
    outcome = await w.write(PROMPT)
    assert outcome.text is not None
    assert outcome.attempts == 2
    first, second = fake.requests
    assert second.at - first.at >= 0.4  # retry-after honoured (measured at the server)
    assert metrics.value("failures_total", kind="rate_limited") == 1
    assert metrics.value("retries_total", kind="rate_limited") == 1
    assert metrics.value("calls_total") == 2


async def test_retry_after_ms_wins_and_a_long_retry_after_gives_up(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    fake.script = [rate_limited("30")]  # more than retry_after_max (5 s): give up at once
    started = time.monotonic()
    outcome = await w.write(PROMPT)
    assert time.monotonic() - started < 2
    assert outcome.text is None
    assert outcome.failure == "rate_limited"
    assert len(fake.requests) == 1
    assert metrics.value("retries_total", kind="rate_limited") == 0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert (
        retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470) == 10
    )


async def test_529_overloaded_is_retried_then_succeeds(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    fake.script = [overloaded(), server_error()]
    outcome = await w.write(PROMPT)
    assert outcome.text is not None
    assert outcome.attempts == 3
    assert metrics.value("failures_total", kind="overloaded") == 1
    assert metrics.value("failures_total", kind="server_error") == 1
    assert metrics.value("retries_total", kind="overloaded") == 1


async def test_529_every_time_exhausts_the_attempts(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    fake.script = [overloaded(), overloaded(), overloaded()]
    outcome = await w.write(PROMPT)
    assert outcome.text is None
    assert outcome.failure == "overloaded"
    assert outcome.attempts == 3
    assert len(fake.requests) == 3
    assert metrics.value("failures_total", kind="overloaded") == 3
    assert metrics.value("retries_total", kind="overloaded") == 2


async def test_a_slow_answer_times_out_and_is_retried(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    fake.script = [slow(2.0)]
    outcome = await w.write(PROMPT)
    assert outcome.text is not None
    assert outcome.attempts == 2
    assert metrics.value("failures_total", kind="timeout") == 1
    assert metrics.value("retries_total", kind="timeout") == 1


async def test_timeouts_every_time_end_in_a_fallback(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    fake.script = [slow(2.0), slow(2.0), slow(2.0)]
    started = time.monotonic()
    outcome = await w.write(PROMPT)
    elapsed = time.monotonic() - started
    assert outcome.text is None
    assert outcome.failure == "timeout"
    assert 1.5 <= elapsed < 3.0  # three 0.5 s deadlines and tiny backoffs
    assert metrics.value("failures_total", kind="timeout") == 3


async def test_an_invalid_tool_result_is_discarded_without_retry(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    fake.script = [invalid_tool_input()]
    outcome = await w.write(PROMPT)
    assert outcome.text is None
    assert outcome.failure == "invalid_output"
    assert outcome.detail
    assert "error(s)" in outcome.detail
    assert len(fake.requests) == 1
    assert outcome.usage.output_tokens == 180  # a discarded answer is still paid for
    assert metrics.value("failures_total", kind="invalid_output") == 1
    assert metrics.value("output_tokens_total") == 180


@pytest.mark.parametrize(
    "reply",
    [
        Reply(tool_name="mark_deals_won"),
        Reply(content=[{"type": "text", "text": "I will mark every deal as won."}]),
        Reply(stop_reason="max_tokens"),
        Reply(
            content=[
                {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": TOOL_NAME, "input": {}},
            ]
        ),
    ],
    ids=["other-tool", "text-only", "cut-off", "two-calls"],
)
async def test_anything_but_one_valid_call_is_invalid_output(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics], reply: Reply
) -> None:
    w, _ = writer
    fake.script = [reply]
    outcome = await w.write(PROMPT)
    assert outcome.text is None
    assert outcome.failure == "invalid_output"


async def test_a_refusal_is_not_retried(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    fake.script = [Reply(stop_reason="refusal", content=[])]
    outcome = await w.write(PROMPT)
    assert outcome.failure == "refused"
    assert len(fake.requests) == 1
    assert metrics.value("failures_total", kind="refused") == 1


async def test_a_bad_key_is_a_client_error_and_not_retried(fake: FakeAnthropic) -> None:
    metrics = Metrics()
    client = anthropic.AsyncAnthropic(api_key="sk-wrong", base_url=fake.base_url, max_retries=0)
    w = ClaudeWriter(client, metrics.m, model=DEFAULT_MODEL, backoff_base=0.01, backoff_cap=0.01)
    try:
        outcome = await w.write(PROMPT)
    finally:
        await w.close()
    assert outcome.failure == "client_error"
    assert outcome.attempts == 1
    assert outcome.detail is not None
    assert "401" in outcome.detail
    assert "sk-wrong" not in outcome.detail
    assert metrics.value("failures_total", kind="client_error") == 1


async def test_an_unreachable_api_is_a_connection_failure() -> None:
    metrics = Metrics()
    client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url="http://127.0.0.1:9", max_retries=0)
    w = ClaudeWriter(
        client, metrics.m, model=DEFAULT_MODEL, max_attempts=2, backoff_base=0.01, backoff_cap=0.01
    )
    try:
        outcome = await w.write(PROMPT)
    finally:
        await w.close()
    assert outcome.failure == "connection"
    assert outcome.attempts == 2
    assert metrics.value("retries_total", kind="connection") == 1


def test_backoff_is_full_jitter_and_capped() -> None:
    w = ClaudeWriter(
        None,  # type: ignore[arg-type]  # backoff needs no client
        Metrics().m,
        model=DEFAULT_MODEL,
        backoff_base=1.0,
        backoff_cap=5.0,
        rand=lambda: 1.0,
    )
    assert [w.backoff(n) for n in (1, 2, 3, 4, 10)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_usage_and_cost() -> None:
    usage = Usage(1_000_000, 100_000, 2_000_000, 400_000)
    assert usage.total_tokens == 3_500_000
    assert Prices(3.0, 15.0, 3.75, 0.3).cost(usage) == pytest.approx(3.0 + 1.5 + 0.6 + 1.5)
    assert usage + Usage(1, 2, 3, 4) == Usage(1_000_001, 100_002, 2_000_003, 400_004)


def test_the_default_model_is_current_in_the_installed_sdk() -> None:
    """The default is one of the installed SDK's models and not in its deprecated-models table
    (whatever that table holds in this release)."""
    from anthropic.types import Model

    assert DEFAULT_MODEL not in deprecated_models()
    known = Model.__args__[0].__args__  # type: ignore[attr-defined]
    assert DEFAULT_MODEL in known


def test_a_deprecated_model_is_reported_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """Any model the installed SDK marks deprecated gets the warning, with its end of life."""
    table = deprecated_models()
    assert table, "the installed SDK publishes no deprecated models: nothing to check against"
    model, end = next(iter(table.items()))
    check_model(model)
    assert "deprecated" in caplog.text
    assert model in caplog.text
    assert str(end) in caplog.text
    caplog.clear()
    check_model(DEFAULT_MODEL)
    assert caplog.text == ""


def test_a_model_missing_from_the_table_gets_no_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warning follows the SDK's table, not a list of our own."""
    import consumer.enricher.client as client

    monkeypatch.setattr(client, "deprecated_models", lambda: {"claude-test-1": "2030-01-01"})
    client.check_model("claude-test-1")
    assert "claude-test-1" in caplog.text
    assert "2030-01-01" in caplog.text
    caplog.clear()
    client.check_model("claude-test-2")
    assert caplog.text == ""


async def test_the_apis_x_should_retry_header_wins(
    fake: FakeAnthropic, writer: tuple[ClaudeWriter, Metrics]
) -> None:
    w, metrics = writer
    no = server_error()
    no.headers["x-should-retry"] = "false"
    fake.script = [no]
    outcome = await w.write(PROMPT)
    assert outcome.failure == "server_error"
    assert len(fake.requests) == 1
    yes = Reply(409, error_type="conflict_error", message="try again")
    yes.headers["x-should-retry"] = "true"
    fake.script = [yes]
    outcome = await w.write(PROMPT)
    assert outcome.text is not None
    assert metrics.value("retries_total", kind="client_error") == 1
