"""A local stand-in for the Anthropic Messages API, for the real ``anthropic`` client.

``FakeAnthropic`` is a real HTTP server (starlette + uvicorn on 127.0.0.1, a free port) that
speaks the wire format of ``POST /v1/messages``: it checks the API key (``x-api-key`` or
``Authorization: Bearer``), the ``anthropic-version`` header and the request body, and answers
with a ``message`` object (``tool_use`` content, ``stop_reason``, ``usage`` with the cache
fields) and the headers the real API sends (``request-id``, ``anthropic-ratelimit-*``), or with
the real error shape ``{"type": "error", "error": {"type": ..., "message": ...}}``.

Answers come from ``script`` (one per request, in order), then from ``default``. A scripted
answer can be an error (429 with ``retry-after``, 529 ``overloaded_error``, 5xx), a slow answer
(to make the client time out), an invalid tool call, or a refusal. The default answer writes a
plausible insight from the ``<crm_data>`` block of the request (it parses the JSON the enricher
sent). Every request is recorded in ``requests``. The prompt cache is imitated: the first request
with a given system prompt marked ``cache_control`` reports ``cache_creation_input_tokens``, later
ones ``cache_read_input_tokens``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_KEY = "sk-ant-test-0123456789"
TOOL_NAME = "write_insight"
_DATA = re.compile(r"<crm_data>\n(.*)\n</crm_data>", re.DOTALL)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    at: float  # time.monotonic()
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        content = self.body["messages"][-1]["content"]
        if isinstance(content, str):
            return content
        return "".join(block.get("text", "") for block in content)

    def crm_data(self) -> dict[str, Any]:
        match = _DATA.search(self.prompt)
        assert match, "no <crm_data> block in the prompt"
        data: dict[str, Any] = json.loads(match.group(1))
        return data


@dataclass
class Reply:
    """One scripted answer. ``status`` 200 answers with a message, others with an error."""

    status: int = 200
    tool_input: dict[str, Any] | None = None  # None: the default insight for the request
    tool_name: str = TOOL_NAME
    content: list[dict[str, Any]] | None = None  # replaces the whole content when given
    stop_reason: str = "tool_use"
    error_type: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow server, for timeouts)
    output_tokens: int = 180


def rate_limited(retry_after: str = "1") -> Reply:
    return Reply(
        429,
        error_type="rate_limit_error",
        message="Number of request tokens has exceeded your per-minute rate limit",
        headers={"retry-after": retry_after},
    )


def overloaded() -> Reply:
    return Reply(529, error_type="overloaded_error", message="Overloaded")


def server_error() -> Reply:
    return Reply(500, error_type="api_error", message="Internal server error")


def slow(seconds: float) -> Reply:
    return Reply(delay=seconds)


def invalid_tool_input() -> Reply:
    """A tool call whose input breaks the schema (one action, an unknown field)."""
    return Reply(
        tool_input={
            "title": "Deal update",
            "description": "Everything is fine.",
            "actions": [
                {"action": "Wait", "priority": "urgent", "timeline": "", "expected_impact": ""}
            ],
            "mark_all_deals_won": True,
        }
    )


def default_insight(data: dict[str, Any]) -> dict[str, Any]:
    """A plausible rewritten insight from the data the enricher sent (numbers cited)."""
    deal = data.get("deal", {})
    alert = data.get("alert", {})
    metrics = alert.get("key_metrics", {})
    figures = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(metrics.items()))
    who = deal.get("company") or "This deal"
    rule = str(alert.get("rule", "risk")).replace("_", " ")
    others = len(data.get("other_open_alerts", []))
    return {
        "title": f"Claude: {who} needs attention ({rule})"[:120],
        "description": (
            f"Claude's analysis of the {rule} alert: {figures or 'no figures'}. "
            f"{others} other alert(s) are open on this deal, so act before it slips further."
        )[:900],
        "actions": [
            {
                "action": f"Call the buyer at {who} with a dated next step",
                "priority": "high",
                "timeline": "within 24 hours",
                "expected_impact": "Re-engages the buyer and tests the close date",
            },
            {
                "action": "Agree a mutual action plan with owners and dates",
                "priority": "medium",
                "timeline": "this week",
                "expected_impact": "Makes the remaining steps to signature visible",
            },
        ],
    }


class FakeAnthropic:
    """``POST /v1/messages`` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Seen] = []
        self.script: list[Reply] = []
        self.default: Callable[[Seen], Reply] = lambda _seen: Reply()
        self._cached_systems: set[str] = set()
        self._stopping = asyncio.Event()
        app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stopping.set()
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    # -- the endpoint ------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "request-id": f"req_{uuid.uuid4().hex[:24]}",
            "anthropic-organization-id": "org-fake",
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            **(extra or {}),
        }

    def _error(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        return JSONResponse(
            {"type": "error", "error": {"type": kind, "message": message}},
            status_code=status,
            headers=self._headers(headers),
        )

    async def _messages(self, request: Request) -> Response:
        key = request.headers.get("x-api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if key != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version header missing")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "invalid_request_error", "body is not JSON")
        problem = self._check(body)
        if problem:
            return self._error(400, "invalid_request_error", problem)
        seen = Seen(time.monotonic(), dict(request.headers), body)
        self.requests.append(seen)
        reply = self.script.pop(0) if self.script else self.default(seen)
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), reply.delay)
        if reply.status != 200:
            return self._error(reply.status, reply.error_type, reply.message, reply.headers)
        return JSONResponse(self._message(seen, reply), headers=self._headers(reply.headers))

    @staticmethod
    def _check(body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body must be an object"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: field required"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens: field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        if messages[0].get("role") != "user":
            return "messages: first message must use the user role"
        return None

    def _usage(self, body: dict[str, Any], output_tokens: int) -> dict[str, int]:
        system = body.get("system")
        cached = 0
        written = 0
        if isinstance(system, list) and any("cache_control" in b for b in system):
            text = json.dumps([system, body.get("tools")], sort_keys=True)
            size = len(text) // 4
            if text in self._cached_systems:
                cached = size
            else:
                self._cached_systems.add(text)
                written = size
        uncached = len(json.dumps(body.get("messages"))) // 4
        return {
            "input_tokens": uncached,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": cached,
        }

    def _message(self, seen: Seen, reply: Reply) -> dict[str, Any]:
        if reply.content is not None:
            content = reply.content
        else:
            tool_input = reply.tool_input
            if tool_input is None:
                tool_input = default_insight(seen.crm_data())
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": reply.tool_name,
                    "input": tool_input,
                }
            ]
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": seen.body["model"],
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": self._usage(seen.body, reply.output_tokens),
        }
