"""Request authentication of each source, on the raw body, before anything is parsed.

All comparisons are constant-time (``hmac.compare_digest``). Secrets are passed as
``SecretStr`` and unwrapped only here, at the moment of use; nothing here logs.

- HubSpot v3: ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(client secret, method + URI +
  body + timestamp)), ``X-HubSpot-Request-Timestamp`` in epoch milliseconds, rejected when older
  than 5 minutes. The URI is the full URL HubSpot called, with the percent-encodings of HubSpot's
  table decoded.
- Twenty: ``X-Twenty-Webhook-Signature`` = hex(HMAC-SHA256(secret, timestamp + ":" + body)),
  ``X-Twenty-Webhook-Timestamp`` in epoch milliseconds.
- Pipedrive: HTTP basic auth (the user and password set on the webhook).
- Salesforce relay: ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from pydantic import SecretStr
from starlette.datastructures import Headers

HUBSPOT_SIGNATURE = "x-hubspot-signature-v3"
HUBSPOT_TIMESTAMP = "x-hubspot-request-timestamp"
TWENTY_SIGNATURE = "x-twenty-webhook-signature"
TWENTY_TIMESTAMP = "x-twenty-webhook-timestamp"

# HubSpot: "decode any URL-encoded characters listed in the following table" (not "?" of the
# query string, which is never encoded).
_HUBSPOT_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_HUBSPOT_ENCODED = re.compile("|".join(_HUBSPOT_DECODE), re.IGNORECASE)


class AuthError(Exception):
    """401. ``reason`` is a bounded code (metric label and response body)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _fresh_ms(raw: str | None, now: float, max_age: float) -> str:
    """The timestamp header (epoch ms) if it is within ``max_age`` seconds of ``now``."""
    if raw is None or not raw.strip():
        raise AuthError("missing_credentials")
    text = raw.strip()
    if not text.isdigit() or len(text) > 16:
        raise AuthError("bad_signature")
    if abs(now - int(text) / 1000) > max_age:
        raise AuthError("stale_timestamp")
    return text


def hubspot_uri(uri: str) -> str:
    return _HUBSPOT_ENCODED.sub(lambda m: _HUBSPOT_DECODE[m.group(0).upper()], uri)


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    message = method.upper().encode() + hubspot_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.digest(secret.encode(), message, hashlib.sha256)
    return base64.b64encode(digest).decode()


def verify_hubspot(
    secret: SecretStr,
    headers: Headers,
    method: str,
    uri: str,
    body: bytes,
    *,
    now: float,
    max_age: float,
) -> None:
    signature = headers.get(HUBSPOT_SIGNATURE)
    if not signature:
        raise AuthError("missing_credentials")
    timestamp = _fresh_ms(headers.get(HUBSPOT_TIMESTAMP), now, max_age)
    expected = hubspot_signature(secret.get_secret_value(), method, uri, body, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise AuthError("bad_signature")


def twenty_signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def verify_twenty(
    secret: SecretStr, headers: Headers, body: bytes, *, now: float, max_age: float
) -> None:
    signature = headers.get(TWENTY_SIGNATURE)
    if not signature:
        raise AuthError("missing_credentials")
    timestamp = _fresh_ms(headers.get(TWENTY_TIMESTAMP), now, max_age)
    expected = twenty_signature(secret.get_secret_value(), timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise AuthError("bad_signature")


def verify_basic(username: str, password: SecretStr, headers: Headers) -> None:
    scheme, _, credentials = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "basic" or not credentials:
        raise AuthError("missing_credentials")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("bad_credentials") from None
    user, sep, given = decoded.partition(b":")
    user_ok = hmac.compare_digest(user, username.encode())
    password_ok = hmac.compare_digest(given, password.get_secret_value().encode())
    if not (sep and user_ok and password_ok):
        raise AuthError("bad_credentials")


def verify_bearer(token: SecretStr, headers: Headers) -> None:
    scheme, _, given = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthError("missing_credentials")
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise AuthError("bad_credentials")
