"""Twilio's SMS status callbacks: ``POST /twilio/status`` (the notifier's
``VECTOROS_SMS_STATUS_CALLBACK_URL`` points here).

Enabled by ``VECTOROS_GATEWAY_TWILIO_AUTH_TOKEN`` (else 404). The form body is checked against
``X-Twilio-Signature`` (``vectoros/twilio.py``: HMAC-SHA1 with the auth token over the full URL
Twilio called, rebuilt from ``VECTOROS_GATEWAY_PUBLIC_URL`` or the Host header, plus the sorted
parameters); a missing or wrong signature is 401 and nothing is counted. A good callback is
counted by its ``MessageStatus`` (``vectoros_gateway_sms_status_total``; unknown values as
``other``) and answered 204; ``failed`` and ``undelivered`` are logged with the message SID and
Twilio's error code (never the phone numbers or the text).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qsl

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vectoros.twilio import valid_signature

logger = logging.getLogger(__name__)

STATUSES = frozenset(
    {
        "accepted",
        "scheduled",
        "queued",
        "sending",
        "sent",
        "delivered",
        "undelivered",
        "failed",
        "read",
        "canceled",
    }
)
MAX_BODY = 64 * 1024


class TwilioStatus:
    """The ``POST /twilio/status`` endpoint (see the module docstring)."""

    def __init__(
        self,
        token: SecretStr | None,
        uri_of: Callable[[Request], str],
        counted: Callable[[str], None],
        rejected: Callable[[str], None],
    ) -> None:
        self._token = token
        self._uri_of = uri_of
        self._counted = counted
        self._rejected = rejected

    async def handle(self, request: Request) -> Response:
        if self._token is None:
            return JSONResponse({"error": "unknown_source"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_BODY:
            self._rejected("too_large")
            return JSONResponse({"error": "too_large"}, status_code=413)
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            self._rejected("invalid_form")
            return JSONResponse({"error": "invalid_form"}, status_code=400)
        header = request.headers.get("x-twilio-signature")
        uri = self._uri_of(request)
        if not valid_signature(self._token.get_secret_value(), uri, params, header):
            reason = "missing_credentials" if not header else "bad_signature"
            self._rejected(reason)
            logger.warning("twilio status callback unauthorized: %s", reason)
            return JSONResponse({"error": reason}, status_code=401)
        status = params.get("MessageStatus", "")
        self._counted(status if status in STATUSES else "other")
        if status in ("failed", "undelivered"):
            logger.warning(
                "SMS %s %s (Twilio error %s)",
                params.get("MessageSid", "?")[:64],
                status,
                params.get("ErrorCode", "-")[:16],
            )
        return Response(status_code=204)
