"""SMS through Twilio's Messages API against a stand-in of its documented request and answer
(form-encoded POST to /2010-04-01/Accounts/{AccountSid}/Messages.json with basic auth, 201), the
seed's rule (SMS only for high_value_at_risk above 50,000, to the deal's owner), and the
X-Twilio-Signature check of status callbacks against Twilio's published example."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.notifier.directory import parse_directory
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.routing import parse_policy
from consumer.notifier.service import NotifierHandler, build_destinations
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.sms import signature, valid_signature
from tests.unit.test_notifier_service import FakeStore, insight

SID, TOKEN = "AC0123456789abcdef0123456789abcdef", "twilio-auth-TOKENSECRET"
DIRECTORY = """
owners:
  u-17: {name: Ana, phone: "+33612345678", manager: u-1}
  u-1: {name: Bo, phone: "+33698765432"}
"""
POLICY = """
default:
  - rules: [high_value_at_risk]
    value_above: 50000
    to: [sms:owner]
"""
EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


def example(caller: str) -> dict[str, str]:
    return {
        "CallSid": "CA1234567890ABCDE",
        "Caller": caller,
        "Digits": "1234",
        "From": caller,
        "To": "+18005551212",
    }


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
    ],
)
def test_the_signature_matches_twilios_example(caller: str, expected: str) -> None:
    assert signature("12345", EXAMPLE_URL, example(caller)) == expected
    assert valid_signature("12345", EXAMPLE_URL, example(caller), expected)


def test_a_bad_or_missing_signature_is_refused() -> None:
    good = signature("12345", EXAMPLE_URL, example("+14158675309"))
    tampered = {**example("+14158675309"), "Digits": "9999"}
    assert not valid_signature("12345", EXAMPLE_URL, tampered, good)
    assert not valid_signature("other", EXAMPLE_URL, example("+14158675309"), good)
    assert not valid_signature("12345", EXAMPLE_URL + "&x=1", example("+14158675309"), good)
    assert not valid_signature("12345", EXAMPLE_URL, example("+14158675309"), None)


class Twilio:
    """The stand-in: checks what Twilio's API requires and answers as it documents."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if (
            request.method != "POST"
            or request.url.path != f"/2010-04-01/Accounts/{SID}/Messages.json"
        ):
            return httpx.Response(404, json={"code": 20404, "message": "not found"})
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, json={"code": 20003, "message": "Authenticate"})
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if not form.get("To", "").startswith("+"):
            return httpx.Response(400, json={"code": 21211, "message": "invalid To"})
        self.sent.append(form)
        return httpx.Response(
            201,
            json={
                "sid": f"SM{len(self.sent):032d}",
                "status": "queued",
                "to": form["To"],
                "from": form["From"],
                "body": form["Body"],
            },
        )


def make(n: int, rule: str, value: float, owner: str = "u-17") -> Any:
    data = {
        "deal_id": f"deal-{n}",
        "deal_title": f"Deal {n}",
        "deal_value": value,
        "owner_id": owner,
    }
    return insight(n, rule=rule, priority="critical", data=data)


async def test_sms_only_for_high_value_at_risk_above_50k_to_the_owner() -> None:
    twilio = Twilio()
    settings = NotifierSettings(
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        sms_from="+15005550006",
        twilio_api_url="https://api.twilio.test",
        notify_min_priority="high",
        sms_status_callback_url="https://gateway.test/twilio/status",
    )
    directory = parse_directory(DIRECTORY)
    async with httpx.AsyncClient(transport=httpx.MockTransport(twilio)) as http:
        destinations = build_destinations(settings, http, directory=directory)
        store = FakeStore()
        handler = NotifierHandler(
            settings,
            destinations,
            NotifierMetrics(CollectorRegistry()),
            asyncio.Event(),
            log=store,
            policy=parse_policy(POLICY),
            directory=directory,
        )
        batch = [
            make(1, "high_value_at_risk", 80_000.0),
            make(2, "high_value_at_risk", 50_000.0),  # not above
            make(3, "stale_deal", 900_000.0),  # not the rule
            make(4, "high_value_at_risk", 60_000.0, owner="u-1"),
        ]
        assert await handler.handle(batch, asyncio.Event()) == ()
        assert await handler.handle(batch, asyncio.Event()) == ()  # a replay sends nothing
    assert [(s["To"], s["Body"].split(" · ")[1][:6]) for s in twilio.sent] == [
        ("+33612345678", "Deal 1"),
        ("+33698765432", "Deal 4"),
    ]
    assert all(s["From"] == "+15005550006" for s in twilio.sent)
    assert all(s["StatusCallback"] == "https://gateway.test/twilio/status" for s in twilio.sent)
    assert all(len(s["Body"]) <= 320 for s in twilio.sent)
    assert {r.status for r in store.by_type("sms").values()} == {"sent"}


async def test_an_invalid_number_fails_for_good_without_retrying() -> None:
    twilio = Twilio()
    settings = NotifierSettings(
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        sms_from="+15005550006",
        twilio_api_url="https://api.twilio.test",
    )
    directory = parse_directory('owners:\n  u-17: {phone: "0612"}\n')
    async with httpx.AsyncClient(transport=httpx.MockTransport(twilio)) as http:
        destinations = build_destinations(settings, http, directory=directory)
        store = FakeStore()
        handler = NotifierHandler(
            settings,
            destinations,
            NotifierMetrics(CollectorRegistry()),
            asyncio.Event(),
            log=store,
            policy=parse_policy(POLICY),
            directory=directory,
        )
        assert (
            await handler.handle([make(1, "high_value_at_risk", 80_000.0)], asyncio.Event()) == ()
        )
    [row] = store.by_type("sms").values()
    assert (row.status, row.attempts, row.status_code) == ("failed", 1, 400)
