"""``POST /twilio/status``: Twilio's SMS status callbacks, checked with ``X-Twilio-Signature``
over the public URL and the form parameters (the signature function itself is checked against
Twilio's published example in test_notifier_sms.py), counted by status."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import CollectorRegistry

from producer.gateway.app import build_app
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.settings import GatewaySettings
from tests.unit.test_gateway_slack_interactions import NoEvents
from vectoros.twilio import signature

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://hooks.example.com"


def callback(status: str = "delivered", **extra: str) -> dict[str, str]:
    return {
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "MessageSid": "SM0123456789abcdef0123456789abcdef",
        "MessageStatus": status,
        "To": "+33612345678",
        "From": "+15005550006",
        **extra,
    }


class Gateway:
    def __init__(self, token: str | None = TOKEN) -> None:
        self.registry = CollectorRegistry()
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": "unused:9092",
            "metrics_enabled": False,
            "gateway_public_url": PUBLIC,
            "gateway_twilio_auth_token": token,
            "gateway_twenty_secret": "twenty-secret-1",
        }
        self.app = build_app(GatewaySettings(**values), NoEvents(), GatewayMetrics(self.registry))

    async def post(self, params: dict[str, str], sig: str | None) -> httpx.Response:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if sig is not None:
            headers["x-twilio-signature"] = sig
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://internal:8088") as c:
            return await c.post("/twilio/status", content=urlencode(params), headers=headers)

    def count(self, status: str) -> float | None:
        return self.registry.get_sample_value(
            "vectoros_gateway_sms_status_total", {"status": status}
        )


async def test_a_signed_callback_is_counted_by_status() -> None:
    gateway = Gateway()
    url = f"{PUBLIC}/twilio/status"
    for status in ("sent", "delivered", "undelivered", "weird"):
        params = (
            callback(status, ErrorCode="30003") if status == "undelivered" else callback(status)
        )
        response = await gateway.post(params, signature(TOKEN, url, params))
        assert response.status_code == 204
    assert [gateway.count(s) for s in ("sent", "delivered", "undelivered", "other")] == [1] * 4


@pytest.mark.parametrize("case", ["forged", "tampered", "missing", "other_url"])
async def test_an_unsigned_or_altered_callback_is_refused(case: str) -> None:
    gateway = Gateway()
    params = callback("failed")
    url = f"{PUBLIC}/twilio/status"
    sig: str | None = signature(TOKEN, url, params)
    if case == "forged":
        sig = signature("another-token-0123456789abcdef012", url, params)
    elif case == "tampered":
        params = {**params, "MessageStatus": "delivered"}
    elif case == "missing":
        sig = None
    else:
        sig = signature(TOKEN, "https://evil.example.com/twilio/status", params)
    response = await gateway.post(params, sig)
    assert response.status_code == 401
    assert gateway.count("failed") is None
    assert gateway.count("delivered") is None


async def test_without_the_token_the_endpoint_does_not_exist() -> None:
    gateway = Gateway(token=None)
    params = callback()
    sig = signature(TOKEN, f"{PUBLIC}/twilio/status", params)
    assert (await gateway.post(params, sig)).status_code == 404
