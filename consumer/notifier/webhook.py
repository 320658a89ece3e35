"""Generic JSON webhooks, signed per Standard Webhooks (https://www.standardwebhooks.com/).

Each request carries::

    webhook-id:        msg_<32 hex>   stable per (insight_id, lifecycle, destination): retries and
                                      resends after a restart reuse it, so receivers dedupe on it
    webhook-timestamp: <unix seconds> of this attempt (receivers reject stale ones, so every
                                      attempt is signed afresh)
    webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>

where ``key`` is the base64-decoded part of the ``whsec_...`` secret. The body is
``{"type": "insight.<lifecycle>", "timestamp": <detected_at>, "data": <the insight event>}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from consumer.notifier.delivery import Clock, post_json
from consumer.notifier.settings import decode_webhook_secret
from schemas.insights import InsightEvent


def webhook_id(insight_id: str, lifecycle: str, destination_key: str) -> str:
    """The Standard Webhooks message id of one insight lifecycle step for one destination."""
    digest = hashlib.sha256(f"{insight_id}\x1f{lifecycle}\x1f{destination_key}".encode())
    return f"msg_{digest.hexdigest()[:32]}"


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (scheme ``v1``, HMAC-SHA256)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def payload(insight: InsightEvent) -> dict[str, Any]:
    return {
        "type": f"insight.{insight.lifecycle.value}",
        "timestamp": insight.detected_at.isoformat(),
        "data": insight.model_dump(mode="json"),
    }


def signed_request(key: bytes, msg_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }


class WebhookClient:
    """Posts signed insight payloads to one URL (a secret: never logged)."""

    kind = "webhook"

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: SecretStr,
        secret: SecretStr,
        *,
        timeout: float = 10.0,
        wall_clock: Clock | None = None,
    ) -> None:
        self._http = http
        self._url = url
        self._key = decode_webhook_secret(secret)
        self._timeout = timeout
        self._wall_clock = wall_clock or time.time

    async def post(self, msg_id: str, body: dict[str, Any]) -> None:
        """One signed attempt; raises a :class:`vectoros.errors.DeliveryError` on failure."""
        content = orjson.dumps(body)
        headers = signed_request(self._key, msg_id, content, int(self._wall_clock()))
        await post_json(
            self._http,
            self._url.get_secret_value(),
            content,
            headers,
            deadline=self._timeout,
            wall_clock=self._wall_clock,
        )
