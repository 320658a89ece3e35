"""The Slack Block Kit builder and client: structure, limits, escaping of hostile CRM text."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from consumer.notifier.delivery import HttpRejected, HttpRetriable, NetworkFailure
from consumer.notifier.slack import (
    FIELD_TEXT_MAX,
    HEADER_MAX,
    SECTION_TEXT_MAX,
    SlackClient,
    build_message,
    escape,
    truncate,
)
from schemas.insights import InsightEvent, insight_adapter

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
URL = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


def make_insight(**overrides: Any) -> InsightEvent:
    data: dict[str, Any] = {
        "insight_id": "3f1e2d4c-0000-5000-8000-000000000001",
        "lifecycle": "raised",
        "rule": "stale_deal",
        "workspace_id": "ws-1",
        "deal_id": "deal/42 x",
        "title": "Acme renewal has gone quiet",
        "description": "No activity for 9.0 days on a deal worth EUR 25,000.",
        "priority": "high",
        "confidence": 0.9,
        "data": {
            "deal_id": "deal/42 x",
            "deal_title": "Acme renewal",
            "deal_value": 25000.0,
            "currency": "EUR",
            "stage": "proposal",
            "owner_id": "u-7",
            "owner_name": "Dana",
            "company": "Acme",
            "key_metrics": {"days_inactive": 9.0, "days_in_stage": 12.5},
        },
        "actions": [
            {
                "action": "Call the champion",
                "priority": "high",
                "timeline": "today",
                "expected_impact": "Re-engages the buyer",
            },
            {
                "action": "Send a recap",
                "priority": "medium",
                "timeline": "this week",
                "expected_impact": "Keeps momentum",
            },
        ],
        "source": "rules",
        "detected_at": T0.isoformat(),
        "raised_at": T0.isoformat(),
    }
    for key, value in overrides.items():
        if key in data["data"] and key not in data:
            data["data"][key] = value
        else:
            data[key] = value
    return insight_adapter.validate_python(data)


def all_texts(message: dict[str, Any]) -> list[str]:
    """Every string in the message (to search for injected markup)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message)
    return found


def test_block_kit_structure() -> None:
    msg = build_message(make_insight(), deal_url_template="https://crm.example.com/deals/{deal_id}")
    blocks = msg["blocks"]
    assert [b["type"] for b in blocks] == [
        "header",
        "section",
        "section",
        "section",
        "actions",
        "context",
    ]
    header = blocks[0]["text"]
    assert header["type"] == "plain_text"
    assert header["text"] == "🟠 High · Stale deal"
    assert blocks[1]["text"]["text"] == (
        "*Acme renewal has gone quiet*\nNo activity for 9.0 days on a deal worth EUR 25,000."
    )
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in blocks[2]["fields"]}
    assert fields == {
        "*Deal*": "Acme renewal (Acme)",
        "*Value*": "EUR 25,000",
        "*Stage*": "Proposal",
        "*Owner*": "Dana",
        "*Days inactive*": "9",
        "*Confidence*": "90%",
    }
    actions = blocks[3]["text"]["text"]
    assert actions.startswith("*Recommended actions*\n")
    assert "• *Call the champion* (high, today): Re-engages the buyer" in actions
    assert "• *Send a recap* (medium, this week): Keeps momentum" in actions
    button = blocks[4]["elements"][0]
    assert button["type"] == "button"
    assert button["text"]["text"] == "Open deal"
    # the id is URL-quoted: a hostile id cannot change the path or the host
    assert button["url"] == "https://crm.example.com/deals/deal%2F42%20x"
    assert msg["text"] == ("[HIGH] raised: Acme renewal has gone quiet (Acme renewal, EUR 25,000)")
    json.dumps(msg)  # serialisable as is


def test_no_button_without_template_and_no_days_inactive_without_metric() -> None:
    msg = build_message(make_insight(key_metrics={"probability": 20}))
    assert "actions" not in [b["type"] for b in msg["blocks"]]
    labels = [f["text"].split("\n")[0] for f in msg["blocks"][2]["fields"]]
    assert "*Days inactive*" not in labels


def test_headers_per_lifecycle_and_priority() -> None:
    assert (
        build_message(make_insight(lifecycle="escalated", priority="critical"))["blocks"][0][
            "text"
        ]["text"]
        == "🔴 Critical · Escalated · Stale deal"
    )
    assert (
        build_message(make_insight(lifecycle="resolved"))["blocks"][0]["text"]["text"]
        == "✅ Resolved · Stale deal"
    )


def test_missing_values_render_as_dashes() -> None:
    msg = build_message(
        make_insight(deal_value=None, stage=None, owner_name=None, owner_id=None, company=None)
    )
    fields = [f["text"] for f in msg["blocks"][2]["fields"]]
    assert "*Value*\n—" in fields
    assert "*Stage*\n—" in fields
    assert "*Owner*\n—" in fields


def test_hostile_crm_text_is_escaped() -> None:
    evil = "<!channel> Pay now <https://evil.example|https://bank.example> & <@U123>"
    insight = make_insight(
        title=evil,
        description=evil,
        deal_title=evil,
        owner_name=evil,
        company="<!here>",
        actions=[
            {
                "action": evil,
                "priority": "high",
                "timeline": "<!everyone>",
                "expected_impact": evil,
            },
            {"action": "ok", "priority": "low", "timeline": "now", "expected_impact": "ok"},
        ],
    )
    msg = build_message(insight, deal_url_template="https://crm.example.com/d/{deal_id}")
    for text in all_texts(msg):
        if text.startswith("https://crm.example.com/"):
            continue  # the button URL: built from a trusted template and a quoted id
        assert "<" not in text, text
        assert ">" not in text, text
    body = msg["blocks"][1]["text"]["text"]
    assert "&lt;!channel&gt; Pay now &lt;https://evil.example|https://bank.example&gt; &amp;" in (
        body
    )
    assert "&lt;!channel&gt;" in msg["text"]


def test_escape_order() -> None:
    assert escape("a & b < c > d &amp;") == "a &amp; b &lt; c &gt; d &amp;amp;"


@pytest.mark.parametrize("limit", [1, 2, 5, 6, 7, 10, 11, 12])
def test_truncate_never_splits_an_entity(limit: int) -> None:
    text = escape("&&&&&&&&")  # "&amp;" x 8
    cut = truncate(text, limit)
    assert len(cut) <= limit
    body = cut.removesuffix("…")
    assert body.replace("&amp;", "") == "", cut


def test_limits_are_respected() -> None:
    huge = "x" * 10_000
    insight = make_insight(
        title="&" * 5000,
        description="<" * 10_000,
        deal_title=huge,
        owner_name=huge,
        company=huge,
        actions=[
            {
                "action": "a" * 2000,
                "priority": "high",
                "timeline": "t" * 2000,
                "expected_impact": "i" * 2000,
            },
            {"action": "b" * 2000, "priority": "low", "timeline": "t", "expected_impact": "i"},
        ],
        rule="close_date_pressure",
    )
    msg = build_message(insight)
    header, body, fields, actions = msg["blocks"][:4]
    assert len(header["text"]["text"]) <= HEADER_MAX
    assert len(body["text"]["text"]) <= SECTION_TEXT_MAX
    assert body["text"]["text"].startswith("*&amp;")
    assert len(actions["text"]["text"]) <= SECTION_TEXT_MAX
    assert len(fields["fields"]) <= 10
    for f in fields["fields"]:
        assert len(f["text"]) <= FIELD_TEXT_MAX
    assert len(msg["text"]) <= 3000


# -- the client -----------------------------------------------------------------------------------


async def test_client_posts_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = SlackClient(http, SecretStr(URL))
        message = build_message(make_insight())
        await client.post(message)
    assert len(seen) == 1
    assert seen[0].method == "POST"
    assert str(seen[0].url) == URL
    assert seen[0].headers["content-type"] == "application/json"
    assert json.loads(seen[0].content) == message


@pytest.mark.parametrize(
    ("response", "error", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "2"}, text="rate_limited"), HttpRetriable, 2),
        (httpx.Response(500, text="rollup_error"), HttpRetriable, None),
        (httpx.Response(503), HttpRetriable, None),
        (httpx.Response(404, text="channel_not_found"), HttpRejected, None),
        (httpx.Response(410, text="channel_is_archived"), HttpRejected, None),
        (httpx.Response(302, headers={"location": "https://elsewhere"}), HttpRejected, None),
    ],
)
async def test_client_classifies_answers(
    response: httpx.Response, error: type[Exception], retry_after: float | None
) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: response)) as http:
        with pytest.raises(error) as info:
            await SlackClient(http, SecretStr(URL)).post({"text": "x"})
    assert getattr(info.value, "status_code", None) == response.status_code
    assert getattr(info.value, "retry_after", None) == retry_after
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("dropped"), True),
    ],
)
async def test_client_network_errors(exc: Exception, ambiguous: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(NetworkFailure) as info:
            await SlackClient(http, SecretStr(URL)).post({"text": "x"})
    assert info.value.ambiguous is ambiguous
    assert "SECRET" not in str(info.value)
