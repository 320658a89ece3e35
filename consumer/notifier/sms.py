"""SMS through Twilio's Messages API, one destination per person of the owner directory with a
phone (``sms:<owner id>``; routed with ``sms:owner`` / ``sms:manager``).

One attempt is ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded
``To``, ``From`` (or ``MessagingServiceSid``), ``Body`` and optionally ``StatusCallback``, with
HTTP basic auth (Account SID, Auth Token); Twilio answers 201 with the message resource. 429 and
5xx are retried, other 4xx (e.g. 400 invalid number) fail for good. Twilio has no idempotency
key: SMS is at most once by default (``VECTOROS_SMS_AT_MOST_ONCE``).

Twilio's status callbacks are signed: ``X-Twilio-Signature`` is base64(HMAC-SHA1(auth token,
the full callback URL + every POST parameter as name + value, sorted by name)).
:func:`valid_signature` (``vectoros/twilio.py``) checks it; the gateway receives the callbacks
(``POST /twilio/status``).
"""

from __future__ import annotations

import base64
import time
from urllib.parse import quote, urlencode

import httpx
from pydantic import SecretStr

from consumer.notifier.console import _clean
from consumer.notifier.delivery import Clock, post_json
from consumer.notifier.digest import _line, _ordered, headline, insight_of
from consumer.notifier.flood import Message
from consumer.notifier.slack import _money, deal_url
from schemas.insights import InsightEvent
from vectoros.twilio import signature, valid_signature

__all__ = ["SmsClient", "insight_text", "message_text", "signature", "valid_signature"]

BODY_MAX = 320  # two SMS segments
TWILIO_API = "https://api.twilio.com"


def _cut(text: str) -> str:
    flat = " ".join(_clean(text).split())
    return flat if len(flat) <= BODY_MAX else flat[: BODY_MAX - 1] + "…"


def insight_text(insight: InsightEvent, *, deal_url_template: str | None = None) -> str:
    data = insight.data
    url = deal_url(deal_url_template, insight)
    text = (
        f"[{insight.priority.value.upper()}] {insight.title} · {data.deal_title} "
        f"({_money(data.deal_value, data.currency)})" + (f" {url}" if url else "")
    )
    return _cut(text)


def message_text(message: Message, *, deal_url_template: str | None = None) -> str:
    items = _ordered(message)
    if message.kind == "alert" and items and items[0].lifecycle != "flapping":
        return insight_text(insight_of(items[0]), deal_url_template=deal_url_template)
    lines = [headline(message), *(_line(i, insight_of(i)) for i in items[:3])]
    return _cut(" · ".join(lines))


class SmsClient:
    """Sends SMS through one Twilio account. The Auth Token is a secret: never logged."""

    kind = "sms"

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        account_sid: str,
        auth_token: SecretStr,
        sender: str,
        status_callback: str | None = None,
        base_url: str = TWILIO_API,
        timeout: float = 10.0,
        wall_clock: Clock | None = None,
    ) -> None:
        self._http = http
        self._sid = account_sid
        self._token = auth_token
        self._sender = sender
        self._callback = status_callback
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid)}/Messages.json"
        self._timeout = timeout
        self._wall_clock = wall_clock or time.time

    async def send(self, to: str, body: str) -> None:
        """One attempt; raises a :class:`vectoros.errors.DeliveryError` unless Twilio took it."""
        sender = "MessagingServiceSid" if self._sender.startswith("MG") else "From"
        form = {"To": to, sender: self._sender, "Body": body}
        if self._callback:
            form["StatusCallback"] = self._callback
        credentials = f"{self._sid}:{self._token.get_secret_value()}".encode()
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
        }
        await post_json(
            self._http,
            self._url,
            urlencode(form).encode(),
            headers,
            deadline=self._timeout,
            wall_clock=self._wall_clock,
        )
