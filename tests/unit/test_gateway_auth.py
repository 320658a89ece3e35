"""Signature and credential checks, against independent computations of the documented steps."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from producer.gateway import auth
from tests.unit.test_gateway_samples import (
    HUBSPOT_SECRET,
    PIPEDRIVE_PASSWORD,
    PIPEDRIVE_USER,
    SALESFORCE_TOKEN,
    TWENTY_SECRET,
    hubspot_headers,
    pipedrive_headers,
    salesforce_headers,
    twenty_headers,
)

NOW = 1_735_725_600.0
TS = str(int(NOW * 1000))
URI = "https://hooks.example.com/webhooks/hubspot/ws-acme"
BODY = b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000}]'


def hubspot(headers: dict[str, str], body: bytes = BODY, uri: str = URI, now: float = NOW) -> None:
    auth.verify_hubspot(
        SecretStr(HUBSPOT_SECRET), Headers(headers), "POST", uri, body, now=now, max_age=300
    )


def test_hubspot_matches_the_documented_steps() -> None:
    source = ("POST" + URI + BODY.decode() + TS).encode()
    expected = base64.b64encode(hmac.new(HUBSPOT_SECRET.encode(), source, hashlib.sha256).digest())
    assert auth.hubspot_signature(HUBSPOT_SECRET, "post", URI, BODY, TS) == expected.decode()
    hubspot(hubspot_headers(BODY, URI, timestamp=TS))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: {**h, "X-HubSpot-Signature-v3": "AAAA"}, "bad_signature"),
        (
            lambda h: {k: v for k, v in h.items() if k != "X-HubSpot-Signature-v3"},
            "missing_credentials",
        ),
        (
            lambda h: {k: v for k, v in h.items() if k != "X-HubSpot-Request-Timestamp"},
            "missing_credentials",
        ),
        (lambda h: {**h, "X-HubSpot-Request-Timestamp": "soon"}, "bad_signature"),
    ],
)
def test_hubspot_header_problems(mutate: object, reason: str) -> None:
    headers = mutate(hubspot_headers(BODY, URI, timestamp=TS))  # type: ignore[operator]
    with pytest.raises(auth.AuthError) as err:
        hubspot(headers)
    assert err.value.reason == reason


def test_hubspot_tampered_body_wrong_secret_other_uri_stale() -> None:
    good = hubspot_headers(BODY, URI, timestamp=TS)
    cases = [
        (good, BODY.replace(b"62515", b"62516"), URI, NOW, "bad_signature"),
        (hubspot_headers(BODY, URI, secret="wrong", timestamp=TS), BODY, URI, NOW, "bad_signature"),
        (good, BODY, URI + "/other", NOW, "bad_signature"),
        (good, BODY, URI, NOW + 301, "stale_timestamp"),
        (good, BODY, URI, NOW - 301, "stale_timestamp"),
    ]
    for headers, body, uri, now, reason in cases:
        with pytest.raises(auth.AuthError) as err:
            hubspot(headers, body, uri, now)
        assert err.value.reason == reason
    hubspot(good, now=NOW + 299)


def test_hubspot_uri_decoding_table() -> None:
    encoded = "https://hooks.example.com/webhooks/hubspot/ws%3Aacme?x=%40a%2Cb%20c"
    assert (
        auth.hubspot_uri(encoded) == "https://hooks.example.com/webhooks/hubspot/ws:acme?x=@a,b%20c"
    )
    signed_as = "https://hooks.example.com/webhooks/hubspot/ws:acme?x=@a,b%20c"
    hubspot(hubspot_headers(BODY, signed_as, timestamp=TS), uri=encoded)


def test_twenty() -> None:
    expected = hmac.new(
        TWENTY_SECRET.encode(), f"{TS}:".encode() + BODY, hashlib.sha256
    ).hexdigest()
    assert auth.twenty_signature(TWENTY_SECRET, TS, BODY) == expected

    def check(headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> None:
        auth.verify_twenty(SecretStr(TWENTY_SECRET), Headers(headers), body, now=now, max_age=300)

    good = twenty_headers(BODY, timestamp=TS)
    check(good)
    check({**good, "X-Twenty-Webhook-Signature": good["X-Twenty-Webhook-Signature"].upper()})
    for headers, body, now, reason in [
        (good, BODY + b" ", NOW, "bad_signature"),
        (twenty_headers(BODY, secret="nope", timestamp=TS), BODY, NOW, "bad_signature"),
        (good, BODY, NOW + 3600, "stale_timestamp"),
        ({"X-Twenty-Webhook-Timestamp": TS}, BODY, NOW, "missing_credentials"),
    ]:
        with pytest.raises(auth.AuthError) as err:
            check(headers, body, now)
        assert err.value.reason == reason


def test_basic_auth() -> None:
    def check(headers: dict[str, str]) -> None:
        auth.verify_basic(PIPEDRIVE_USER, SecretStr(PIPEDRIVE_PASSWORD), Headers(headers))

    check(pipedrive_headers())
    for headers, reason in [
        (pipedrive_headers(password="wrong"), "bad_credentials"),
        (pipedrive_headers(user="other"), "bad_credentials"),
        ({"Authorization": "Basic !!!"}, "bad_credentials"),
        ({"Authorization": "Bearer x"}, "missing_credentials"),
        ({}, "missing_credentials"),
    ]:
        with pytest.raises(auth.AuthError) as err:
            check(headers)
        assert err.value.reason == reason


def test_bearer() -> None:
    def check(headers: dict[str, str]) -> None:
        auth.verify_bearer(SecretStr(SALESFORCE_TOKEN), Headers(headers))

    check(salesforce_headers())
    with pytest.raises(auth.AuthError, match="bad_credentials"):
        check(salesforce_headers("wrong-token"))
    with pytest.raises(auth.AuthError, match="missing_credentials"):
        check({"Authorization": "Basic abc"})
