"""Slack interactions: ``POST /slack/interactions``, where Slack sends the presses of the
notifier's buttons (Acknowledge / Snooze 1 day / Snooze 1 week / Not useful).

Enabled by ``VECTOROS_GATEWAY_SLACK_SIGNING_SECRET`` (else 404). Per request: the body is read
up to the gateway's limit (else 413) -> Slack's signature is checked on the raw bytes
(``X-Slack-Signature`` = ``v0=`` + hex(HMAC-SHA256(signing secret, ``v0:{timestamp}:{body}``)),
``X-Slack-Request-Timestamp`` in epoch seconds within ``VECTOROS_GATEWAY_MAX_TIMESTAMP_AGE_SECONDS``
(5 minutes) of now; else 401 and nothing else happens) -> the form field ``payload`` is parsed as
a ``block_actions`` interaction (else 400) -> each press of one of our buttons becomes an
``InsightAck`` (``schemas/acks.py``) on ``insight-acks``, and the broker's acknowledgement is
awaited (else 503: Slack shows the user an error and nothing was recorded) -> 200 with an empty
body (what Slack expects within 3 seconds). Other actions (the "Open deal" link button) are
ignored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson
from pydantic import SecretStr, ValidationError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from producer.gateway.auth import AuthError
from schemas.acks import AckSource, AckState, InsightAck
from vectoros.acks import publish_acks

logger = logging.getLogger(__name__)

SLACK_SIGNATURE = "x-slack-signature"
SLACK_TIMESTAMP = "x-slack-request-timestamp"
DAY = dt.timedelta(days=1)

# The notifier's button action_ids (consumer/notifier/slack_app.py) -> the ack and its snooze.
ACTIONS: dict[str, tuple[AckState, dt.timedelta | None]] = {
    "vectoros_ack": (AckState.ACKNOWLEDGED, None),
    "vectoros_snooze_1d": (AckState.SNOOZED, DAY),
    "vectoros_snooze_1w": (AckState.SNOOZED, 7 * DAY),
    "vectoros_not_useful": (AckState.NOT_USEFUL, None),
}


class AckPublisher(Protocol):
    """Publishes acks and returns once the broker acknowledged all of them."""

    async def send(self, acks: Sequence[InsightAck]) -> None: ...


class InteractionError(Exception):
    """400: not a block_actions payload we can read. ``reason`` is a bounded code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's ``X-Slack-Signature`` of a request (version v0)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify_slack(
    secret: SecretStr, headers: Headers, body: bytes, *, now: float, max_age: float
) -> None:
    """Raise ``AuthError`` unless the request is signed by Slack within ``max_age`` seconds."""
    signature = headers.get(SLACK_SIGNATURE)
    raw = headers.get(SLACK_TIMESTAMP)
    if not signature or not raw or not raw.strip():
        raise AuthError("missing_credentials")
    timestamp = raw.strip()
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise AuthError("bad_signature")
    if abs(now - int(timestamp)) > max_age:
        raise AuthError("stale_timestamp")
    expected = slack_signature(secret.get_secret_value(), timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise AuthError("bad_signature")


def _ack_id(insight_id: str, user: str, action_id: str, action_ts: str) -> str:
    key = f"slack\n{insight_id}\n{user}\n{action_id}\n{action_ts}".encode()
    return "slack-" + hashlib.sha256(key).hexdigest()[:32]


def parse_interaction(body: bytes, now: float) -> list[InsightAck]:
    """The acks in a form-encoded Slack interaction (``payload=<JSON>``); [] for presses of
    other buttons. Raises ``InteractionError``."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=False)
    except UnicodeDecodeError:
        raise InteractionError("invalid_form") from None
    raw = form.get("payload")
    if not raw:
        raise InteractionError("no_payload")
    try:
        payload = orjson.loads(raw[0])
    except orjson.JSONDecodeError:
        raise InteractionError("invalid_json") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise InteractionError("unsupported_type")
    user = payload.get("user")
    actor = user.get("id") if isinstance(user, dict) else None
    actions = payload.get("actions")
    if not isinstance(actor, str) or not actor or not isinstance(actions, list):
        raise InteractionError("invalid_payload")
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    acks = []
    for action in actions:
        if not isinstance(action, dict):
            raise InteractionError("invalid_payload")
        known = ACTIONS.get(str(action.get("action_id")))
        if known is None:
            continue  # the "Open deal" link, or a button of another app version
        state, snooze = known
        insight_id = action.get("value")
        if not isinstance(insight_id, str):
            raise InteractionError("invalid_payload")
        action_ts = str(action.get("action_ts") or now)
        try:
            acks.append(
                InsightAck(
                    ack_id=_ack_id(insight_id, actor, str(action["action_id"]), action_ts),
                    insight_id=insight_id,
                    state=state,
                    snoozed_until=None if snooze is None else when + snooze,
                    actor=f"slack:{actor}",
                    source=AckSource.SLACK,
                    at=when,
                )
            )
        except ValidationError:
            raise InteractionError("invalid_payload") from None
    return acks


class SlackInteractions:
    """The ``POST /slack/interactions`` endpoint (see the module docstring)."""

    def __init__(
        self,
        secret: SecretStr | None,
        publisher: AckPublisher | None,
        *,
        max_body_bytes: int,
        max_age: float,
        publish_timeout: float,
        clock: Callable[[], float],
        counted: Callable[[str, str], None],
    ) -> None:
        self._secret = secret
        self._publisher = publisher
        self._limit = max_body_bytes
        self._max_age = max_age
        self._timeout = publish_timeout
        self._clock = clock
        self._counted = counted  # (outcome, state) -> a metric

    async def handle(self, request: Request) -> Response:
        if self._secret is None or self._publisher is None:
            return JSONResponse({"error": "unknown_source"}, status_code=404)
        try:
            body = await _read(request, self._limit)
        except _TooLarge:
            self._counted("too_large", "-")
            return JSONResponse({"error": "too_large"}, status_code=413)
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            now = self._clock()
            verify_slack(self._secret, request.headers, body, now=now, max_age=self._max_age)
        except AuthError as exc:
            self._counted(exc.reason, "-")
            logger.warning("slack interaction unauthorized: %s", exc.reason)
            return JSONResponse({"error": exc.reason}, status_code=401)
        try:
            acks = parse_interaction(body, self._clock())
        except InteractionError as exc:
            self._counted(exc.reason, "-")
            logger.warning("slack interaction rejected: %s", exc.reason)
            return JSONResponse({"error": exc.reason}, status_code=400)
        if acks:
            try:
                await asyncio.wait_for(self._publisher.send(acks), self._timeout)
            except Exception as exc:  # Slack shows the user an error; nothing was recorded
                self._counted("publish_failed", "-")
                logger.error("slack interaction: publishing failed (%s)", type(exc).__name__)
                return JSONResponse({"error": "unavailable"}, status_code=503)
        for ack in acks:
            self._counted("published", ack.state.value)
            logger.info("insight %s %s by %s (slack)", ack.insight_id, ack.state.value, ack.actor)
        return Response(status_code=200)


class _TooLarge(Exception):
    pass


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class KafkaAckPublisher:
    """Publishes acks on ``topic`` (key: the insight id) with a started aiokafka producer and
    waits for exactly their acknowledgements (``vectoros.acks.publish_acks``)."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def send(self, acks: Sequence[InsightAck]) -> None:
        await publish_acks(self._producer, self.topic, acks)
