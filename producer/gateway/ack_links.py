"""Answer links from the notifier's emails: ``GET /acks/<token>`` and ``POST /acks/<token>``.

Enabled by ``VECTOROS_GATEWAY_ACK_LINK_KEY`` (the notifier's ``VECTOROS_NOTIFY_ACK_LINK_KEY``;
else 404). The token is checked first (``vectoros.ack_links``: HMAC-SHA256 with that key, then
the expiry): a forged or altered link is 403, an expired one 410, and nothing is published.

Following the link (``GET``) only shows a page with one button: mail scanners and link previews
fetch the URLs of a mail, and must not answer for the person. The button ``POST``s to the same
URL, which publishes an ``InsightAck`` (source ``email``, actor ``email:<owner id>``, a snooze of
one day from the press) on ``insight-acks`` and waits for the broker (else 503). The ack id is
derived from the token, so pressing twice changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import html
import logging
from collections.abc import Callable

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from producer.gateway.slack import AckPublisher
from schemas.acks import AckSource, AckState, InsightAck
from vectoros.ack_links import AckLink, BadLink, verify

logger = logging.getLogger(__name__)

_WHAT = {
    "acknowledged": (AckState.ACKNOWLEDGED, None, "Acknowledge"),
    "snooze_1d": (AckState.SNOOZED, dt.timedelta(days=1), "Snooze for 1 day"),
    "not_useful": (AckState.NOT_USEFUL, None, "Mark as not useful"),
}
_STATUS = {"bad_signature": 403, "malformed": 403, "expired": 410}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    e = html.escape
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<meta name='robots' content='noindex'></head><body><h1>{e(title)}</h1>{body}"
        "</body></html>",
        status_code=status,
        headers={"cache-control": "no-store", "referrer-policy": "no-referrer"},
    )


class AckLinks:
    """The ``/acks/<token>`` endpoint (see the module docstring)."""

    def __init__(
        self,
        key: SecretStr | None,
        publisher: AckPublisher | None,
        *,
        publish_timeout: float,
        clock: Callable[[], float],
        counted: Callable[[str, str], None],
    ) -> None:
        self._key = key
        self._publisher = publisher
        self._timeout = publish_timeout
        self._clock = clock
        self._counted = counted  # (outcome, state) -> a metric

    def _link(self, token: str) -> AckLink:
        assert self._key is not None
        return verify(self._key.get_secret_value().encode(), token, self._clock())

    async def handle(self, request: Request) -> Response:
        if self._key is None or self._publisher is None:
            return _page("Not found", "", 404)
        token = request.path_params["token"]
        try:
            link = self._link(token)
        except BadLink as exc:
            self._counted(exc.reason, "-")
            logger.warning("answer link refused: %s", exc.reason)
            text = "This link has expired." if exc.reason == "expired" else "This link is invalid."
            return _page("Cannot answer", f"<p>{text}</p>", _STATUS[exc.reason])
        state, snooze, verb = _WHAT[link.answer]
        e = html.escape
        if request.method == "GET":
            form = (
                f"<p>Insight <code>{e(link.insight_id)}</code></p><form method='post'>"
                f"<button type='submit'>{e(verb)}</button></form>"
            )
            return _page(verb, form)
        now = self._clock()
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        ack = InsightAck(
            ack_id="email-" + hashlib.sha256(token.encode()).hexdigest()[:32],
            insight_id=link.insight_id,
            state=state,
            snoozed_until=None if snooze is None else when + snooze,
            actor=f"email:{link.recipient}" if link.recipient else "email",
            source=AckSource.EMAIL,
            at=when,
        )
        try:
            await asyncio.wait_for(self._publisher.send([ack]), self._timeout)
        except Exception as exc:  # nothing recorded: the person can press again
            self._counted("publish_failed", "-")
            logger.error("answer link: publishing failed (%s)", type(exc).__name__)
            return _page("Try again", "<p>The answer could not be recorded.</p>", 503)
        self._counted("published", state.value)
        logger.info("insight %s %s by %s (email)", ack.insight_id, state.value, ack.actor)
        return _page("Done", f"<p>Insight <code>{e(link.insight_id)}</code>: {e(state.value)}.</p>")
