"""Standard Webhooks signing: the published test vector, an independent computation, the client."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import httpx
import pytest
from pydantic import SecretStr

from consumer.notifier.settings import decode_webhook_secret
from consumer.notifier.webhook import WebhookClient, payload, sign, signed_request, webhook_id
from schemas.insights import insight_adapter

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
URL = "https://receiver.example.com/hooks/vectoros?token=SECRETTOKEN"


def _independent_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The spec, written out separately: HMAC-SHA256 over "{id}.{ts}.{body}" with the
    base64-decoded key after "whsec_", base64-encoded, "v1," prefixed."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.digest(key, content, "sha256")).decode()


def test_published_vector() -> None:
    # From the Standard Webhooks reference libraries' "sign function works" test.
    key = decode_webhook_secret(SecretStr(SECRET))
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    assert _independent_signature(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        expected
    )


def test_matches_independent_computation() -> None:
    key = decode_webhook_secret(SecretStr(SECRET))
    body = '{"type":"insight.raised","data":{"title":"Überfällig €"}}'.encode()
    for ts in (0, 1_700_000_000, 2_000_000_000):
        assert sign(key, "msg_abc", ts, body) == _independent_signature(SECRET, "msg_abc", ts, body)


def test_headers() -> None:
    key = decode_webhook_secret(SecretStr(SECRET))
    headers = signed_request(key, "msg_1", b"{}", 1614265330)
    assert headers == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1614265330",
        "webhook-signature": _independent_signature(SECRET, "msg_1", 1614265330, b"{}"),
    }


def test_webhook_id_is_stable_and_specific() -> None:
    a = webhook_id("insight-1", "raised", "k" * 64)
    assert a == webhook_id("insight-1", "raised", "k" * 64)
    assert a.startswith("msg_")
    assert len(a) == 4 + 32
    assert a != webhook_id("insight-1", "escalated", "k" * 64)
    assert a != webhook_id("insight-1", "raised", "j" * 64)
    assert a != webhook_id("insight-2", "raised", "k" * 64)
    expected = hashlib.sha256(b"insight-1\x1fraised\x1f" + b"k" * 64).hexdigest()[:32]
    assert a == "msg_" + expected


@pytest.mark.parametrize(
    "bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_AAAA", ""]
)
def test_bad_secrets_are_rejected_without_echo(bad: str) -> None:
    with pytest.raises(ValueError, match="webhook_secret") as info:
        decode_webhook_secret(SecretStr(bad))
    if bad:
        assert bad not in str(info.value)


async def test_client_sends_a_verifiable_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    insight = insight_adapter.validate_python(
        {
            "insight_id": "i-1",
            "lifecycle": "escalated",
            "rule": "high_value_at_risk",
            "workspace_id": "ws",
            "deal_id": "d-1",
            "title": "t",
            "description": "d",
            "priority": "critical",
            "confidence": 0.85,
            "data": {"deal_id": "d-1", "deal_title": "Deal", "deal_value": 50000},
            "actions": [
                {"action": "a", "priority": "high", "timeline": "t", "expected_impact": "i"},
                {"action": "b", "priority": "low", "timeline": "t", "expected_impact": "i"},
            ],
            "source": "rules",
            "detected_at": "2025-03-01T09:00:00+00:00",
            "raised_at": "2025-02-28T09:00:00+00:00",
        }
    )
    msg_id = webhook_id(insight.insight_id, insight.lifecycle.value, "a" * 64)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = WebhookClient(
            http, SecretStr(URL), SecretStr(SECRET), wall_clock=lambda: 1_750_000_000.7
        )
        await client.post(msg_id, payload(insight))
        await client.post(msg_id, payload(insight))  # a retry: same id, same body
    first, second = seen
    assert str(first.url) == URL
    assert first.headers["content-type"] == "application/json"
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == msg_id
    assert first.headers["webhook-timestamp"] == "1750000000"
    assert first.headers["webhook-signature"] == _independent_signature(
        SECRET, msg_id, 1_750_000_000, first.content
    )
    body = json.loads(first.content)
    assert body["type"] == "insight.escalated"
    assert body["timestamp"] == "2025-03-01T09:00:00+00:00"
    assert body["data"]["insight_id"] == "i-1"
    assert insight_adapter.validate_python(body["data"]) == insight
    assert dt.datetime.fromisoformat(body["timestamp"]).tzinfo is not None
