"""Signed answer links: what the notifier puts in an email ("Acknowledge", "Snooze 1 day", "Not
useful") and the gateway checks when the link is followed (``/acks/<token>``).

A token is ``base64url(JSON claims) "." base64url(HMAC-SHA256(key, "vectoros-ack-v1." + the
first part))``: the insight id (``i``), the answer (``s``: ``acknowledged``, ``snooze_1d`` or
``not_useful``), who it was sent to (``a``: the owner id) and when it expires (``e``, epoch
seconds). The key is shared by the notifier (``VECTOROS_NOTIFY_ACK_LINK_KEY``) and the gateway
(``VECTOROS_GATEWAY_ACK_LINK_KEY``); a link whose signature does not match, or that expired, is
refused. Pure: no I/O, the time is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

import orjson

ANSWERS = ("acknowledged", "snooze_1d", "not_useful")
_DOMAIN = b"vectoros-ack-v1."
MAX_TOKEN = 1000


class BadLink(Exception):
    """The link cannot be used. ``reason``: bad_signature, expired or malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AckLink:
    insight_id: str
    answer: str
    recipient: str
    expires: int  # epoch seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.digest(key, _DOMAIN + body.encode("ascii"), hashlib.sha256))


def sign(key: bytes, link: AckLink) -> str:
    """The token of ``link``."""
    if link.answer not in ANSWERS:
        raise ValueError(f"unknown answer {link.answer!r}")
    claims = {"i": link.insight_id, "s": link.answer, "a": link.recipient, "e": link.expires}
    body = _b64(orjson.dumps(claims))
    return f"{body}.{_mac(key, body)}"


def verify(key: bytes, token: str, now: float) -> AckLink:
    """The link a token carries; raises ``BadLink`` (signature first, then expiry)."""
    if len(token) > MAX_TOKEN or token.count(".") != 1:
        raise BadLink("malformed")
    body, mac = token.split(".")
    try:
        body.encode("ascii")
        mac.encode("ascii")
    except UnicodeEncodeError:
        raise BadLink("malformed") from None
    if not hmac.compare_digest(_mac(key, body).encode(), mac.encode()):
        raise BadLink("bad_signature")
    try:
        claims = orjson.loads(_unb64(body))
    except (binascii.Error, ValueError):
        raise BadLink("malformed") from None
    if not isinstance(claims, dict):
        raise BadLink("malformed")
    insight_id, answer, recipient, expires = (claims.get(k) for k in ("i", "s", "a", "e"))
    if (
        not isinstance(insight_id, str)
        or not insight_id
        or answer not in ANSWERS
        or not isinstance(recipient, str)
        or not isinstance(expires, int)
    ):
        raise BadLink("malformed")
    if now >= expires:
        raise BadLink("expired")
    return AckLink(insight_id, str(answer), recipient, expires)
