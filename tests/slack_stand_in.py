"""A stand-in of Slack's Web API (``chat.postMessage``, ``chat.update``) for an
``httpx.MockTransport``, following Slack's documented requests and answers: JSON body with a
bearer token; HTTP 200 with ``{"ok": true, "channel", "ts", "message"}`` or ``{"ok": false,
"error"}`` (``invalid_auth``, ``channel_not_found``, ``message_not_found``, ...); HTTP 429 with
``Retry-After`` and error ``ratelimited`` when scripted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Posted:
    channel: str
    ts: str
    body: dict[str, Any]
    thread_ts: str | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)


class SlackWebApi:
    """Callable as an ``httpx.MockTransport`` handler. ``messages`` by ts; ``calls`` in order."""

    def __init__(self, token: str, channels: set[str]) -> None:
        self.token = token
        self.channels = channels
        self.messages: dict[str, Posted] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.script: list[httpx.Response] = []  # answered first, one per request
        self._next = 1_700_000_000_000100

    def _ts(self) -> str:
        self._next += 1
        text = str(self._next)
        return f"{text[:10]}.{text[10:]}"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method = request.url.path.rsplit("/", 1)[-1]
        if self.script:
            return self.script.pop(0)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(200, json={"ok": False, "error": "invalid_auth"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return httpx.Response(200, json={"ok": False, "error": "invalid_form_data"})
        body = orjson.loads(request.content)
        self.calls.append((method, body))
        channel = body.get("channel")
        if channel not in self.channels:
            return httpx.Response(200, json={"ok": False, "error": "channel_not_found"})
        if not body.get("text") and not body.get("blocks"):
            return httpx.Response(200, json={"ok": False, "error": "no_text"})
        if method == "chat.postMessage":
            thread = body.get("thread_ts")
            if thread is not None and thread not in self.messages:
                return httpx.Response(200, json={"ok": False, "error": "thread_not_found"})
            ts = self._ts()
            self.messages[ts] = Posted(channel, ts, body, thread)
            message = {"type": "message", "text": body.get("text", ""), "ts": ts}
            return httpx.Response(
                200, json={"ok": True, "channel": channel, "ts": ts, "message": message}
            )
        if method == "chat.update":
            posted = self.messages.get(body.get("ts", ""))
            if posted is None or posted.channel != channel:
                return httpx.Response(200, json={"ok": False, "error": "message_not_found"})
            posted.updates.append(body)
            return httpx.Response(
                200,
                json={"ok": True, "channel": channel, "ts": posted.ts, "text": body.get("text")},
            )
        return httpx.Response(200, json={"ok": False, "error": "unknown_method"})

    def ratelimit(self, retry_after: int = 0) -> None:
        """The next request gets Slack's rate-limit answer."""
        self.script.append(
            httpx.Response(
                429,
                headers={"retry-after": str(retry_after)},
                json={"ok": False, "error": "ratelimited"},
            )
        )

    def roots(self, channel: str) -> list[Posted]:
        return [m for m in self.messages.values() if m.channel == channel and m.thread_ts is None]

    def replies(self, thread_ts: str) -> list[Posted]:
        return [m for m in self.messages.values() if m.thread_ts == thread_ts]
