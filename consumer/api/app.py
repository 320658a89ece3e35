"""The read API and the dashboard page as one Starlette app.

Every ``/api/v1`` route needs ``Authorization: Bearer <token>``; the token's workspace is the
only one it reads (a ``workspace`` parameter naming another one is 403; another workspace's deal
or insight is 404, as if it did not exist). Each token has a rate limit (429 with
``Retry-After``). List answers carry an ``ETag``; ``If-None-Match`` with it answers 304.
The one write is an answer to an insight (acknowledge, snooze, not useful: ``answers.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from consumer.api.answers import ANSWERS, BODY_MAX, Answers, AnswersUnavailable, make_ack
from consumer.api.live import CLOSED, LiveHub
from consumer.api.metrics import ApiMetrics
from consumer.api.openapi import openapi_document
from consumer.api.paging import BadCursor, decode_cursor, encode_cursor, etag_of, matches
from consumer.api.queries import PRIORITY_RANK, ApiStore, InsightFilter
from consumer.api.ratelimit import RateLimiter
from consumer.api.settings import ApiSettings
from consumer.api.tokens import TokenInfo, TokenLookup
from schemas.insights import RuleName
from vectoros.when import parse_when

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Handler = Callable[[Request, TokenInfo], Awaitable[Response]]

STATIC = resources.files("consumer.api") / "static"
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_RULES = frozenset(r.value for r in RuleName)
_STATUSES = {"open": "open", "resolved": "resolved", "all": None}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers
    )


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": code, "detail": detail}, status, headers)


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _listing(request: Request, data: Any) -> Response:
    """A list answer with its ETag, or 304 when the client has it already."""
    body = orjson.dumps(data)
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _one_of(request: Request, name: str, allowed: Any, default: str | None = None) -> str | None:
    value = request.query_params.get(name, default)
    if value is not None and value not in allowed:
        raise ApiError(400, "bad_parameter", f"{name} must be one of {', '.join(sorted(allowed))}")
    return value


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """A whole number of at least ``low``; above ``high`` it is ``high`` (a page size larger
    than the server serves gets the largest page, as the document says)."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < low:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer of at least {low}")
    return min(int(text), high)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _since(request: Request, now: dt.datetime, default: dt.datetime | None) -> dt.datetime | None:
    """``since``: RFC 3339 (either case; a leap second counts as :59) or an age; a time before
    1970 is 1970 (nothing is older)."""
    text = request.query_params.get("since")
    if text is None:
        return default
    if "-" in text:
        text = text.upper().replace(":60", ":59")
    try:
        when = parse_when(text, now)
        return max(when, _EPOCH)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, OverflowError) or "out of range" in str(exc):
            return _EPOCH
        raise ApiError(400, "bad_parameter", f"since: {exc}") from None


def _no_nul(request: Request) -> None:
    """PostgreSQL text cannot hold NUL: a parameter with one matches nothing, so say so."""
    values = [*request.query_params.values(), *map(str, request.path_params.values())]
    if any("\x00" in value for value in values):
        raise ApiError(400, "bad_parameter", "parameters may not contain NUL characters")


def _workspace_check(request: Request, token: TokenInfo) -> None:
    asked = request.query_params.get("workspace")
    if asked is not None and asked != token.workspace_id:
        raise ApiError(403, "forbidden", "this token does not read that workspace")


def build_app(
    settings: ApiSettings,
    store: ApiStore,
    tokens: TokenLookup,
    metrics: ApiMetrics,
    hub: LiveHub | None,
    *,
    clock: Clock = lambda: dt.datetime.now(dt.UTC),
    monotonic: Callable[[], float] = time.monotonic,
    answers: Answers | None = None,
) -> Starlette:
    limiter = RateLimiter(
        settings.api_rate_limit_per_second, settings.api_rate_limit_burst, monotonic
    )
    keepalive = settings.api_live_keepalive_seconds

    async def authorize(request: Request) -> TokenInfo | Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            metrics.auth_failures.labels("missing").inc()
            return _error(
                401,
                "unauthorized",
                "send Authorization: Bearer <token> (vectoros tokens create)",
                {"WWW-Authenticate": 'Bearer realm="vectoros"'},
            )
        info = await tokens.authenticate(token.strip())
        if info is None:
            metrics.auth_failures.labels("invalid").inc()
            client = request.client.host if request.client else "unknown"
            wait = limiter.take(f"anonymous:{client}")
            if wait > 0:
                metrics.rate_limited.inc()
                return _error(
                    429, "rate_limited", "too many requests", {"Retry-After": _seconds(wait)}
                )
            return _error(
                401,
                "unauthorized",
                "unknown or revoked token",
                {"WWW-Authenticate": 'Bearer realm="vectoros", error="invalid_token"'},
            )
        wait = limiter.take(f"token:{info.token_id}")
        if wait > 0:
            metrics.rate_limited.inc()
            return _error(
                429,
                "rate_limited",
                "this token is over its rate limit",
                {"Retry-After": _seconds(wait)},
            )
        return info

    def route(name: str, handler: Handler, *, timed: bool = True) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                auth = await authorize(request)
                if isinstance(auth, Response):
                    response = auth
                else:
                    _workspace_check(request, auth)
                    _no_nul(request)
                    response = await handler(request, auth)
            except ApiError as exc:
                response = _error(exc.status, exc.code, exc.detail)
            metrics.requests.labels(name, str(response.status_code)).inc()
            if timed:
                metrics.request_seconds.labels(name).observe(time.perf_counter() - started)
            return response

        return endpoint

    async def me(request: Request, token: TokenInfo) -> Response:
        return _json(
            {"workspace_id": token.workspace_id, "token_id": token.token_id, "name": token.name}
        )

    async def list_insights(request: Request, token: TokenInfo) -> Response:
        status = _one_of(request, "status", _STATUSES, "open")
        assert status is not None
        priority = _one_of(request, "priority", PRIORITY_RANK)
        rule = _one_of(request, "rule", _RULES)
        limit = _int(
            request, "limit", min(50, settings.api_page_size_max), 1, settings.api_page_size_max
        )
        cursor_text = request.query_params.get("cursor")
        try:
            after = None if not cursor_text else decode_cursor(cursor_text)
        except BadCursor as exc:
            raise ApiError(400, "bad_parameter", str(exc)) from None
        where = InsightFilter(
            status=_STATUSES[status],
            priority=priority,
            rule=rule,
            deal=request.query_params.get("deal"),
            owner=request.query_params.get("owner"),
            since=_since(request, clock(), None),
        )
        items, next_after = await store.list_insights(token.workspace_id, where, after, limit)
        return _listing(
            request,
            {
                "items": items,
                "next_cursor": None if next_after is None else encode_cursor(*next_after),
            },
        )

    async def one_insight(request: Request, token: TokenInfo) -> Response:
        found = await store.insight(token.workspace_id, request.path_params["insight_id"])
        if found is None:
            raise ApiError(404, "not_found", "no such insight in this workspace")
        return _json(found)

    async def one_deal(request: Request, token: TokenInfo) -> Response:
        found = await store.deal(token.workspace_id, request.path_params["deal_id"])
        if found is None:
            raise ApiError(404, "not_found", "no such deal in this workspace")
        return _json(found)

    async def answer(request: Request, token: TokenInfo) -> Response:
        body = await _body(request, BODY_MAX)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiError(
                400, "bad_body", 'send a JSON object such as {"answer": "snooze_1d"}'
            ) from None
        choice = data.get("answer") if isinstance(data, dict) else None
        if not isinstance(data, dict) or set(data) != {"answer"} or choice not in ANSWERS:
            raise ApiError(
                400, "bad_body", f"answer must be one of {', '.join(ANSWERS)} (and nothing else)"
            )
        insight_id = request.path_params["insight_id"]
        if len(insight_id) > 200 or await store.insight(token.workspace_id, insight_id) is None:
            raise ApiError(404, "not_found", "no such insight in this workspace")
        if answers is None:
            raise ApiError(503, "unavailable", "answers need a broker (VECTOROS_KAFKA_*)")
        ack = make_ack(insight_id, choice, f"{token.token_id} {token.name}", clock())
        try:
            await answers.answer(ack)
        except AnswersUnavailable as exc:
            logger.warning("api: answer to %s not published (%s)", insight_id, exc)
            metrics.answers.labels(choice, "unavailable").inc()
            raise ApiError(
                503, "unavailable", "the broker did not take the answer; retry"
            ) from None
        metrics.answers.labels(choice, "published").inc()
        until = ack.snoozed_until
        return _json(
            {
                "insight_id": insight_id,
                "ack_id": ack.ack_id,
                "ack": {
                    "state": ack.state.value,
                    "snoozed_until": None if until is None else until.isoformat(),
                },
            }
        )

    async def forecasts(request: Request, token: TokenInfo) -> Response:
        limit = _int(request, "limit", 20, 1, 500)
        rows = await store.forecasts(token.workspace_id, request.query_params.get("period"), limit)
        return _listing(request, {"items": rows})

    async def rule_stats(request: Request, token: TokenInfo) -> Response:
        now = clock()
        since = _since(request, now, now - dt.timedelta(days=30))
        assert since is not None
        rows = await store.rule_stats(token.workspace_id, since)
        return _listing(request, {"since": since.isoformat(), "items": rows})

    async def summary(request: Request, token: TokenInfo) -> Response:
        return _listing(request, await store.summary(token.workspace_id))

    async def model(request: Request, token: TokenInfo) -> Response:
        return _listing(request, {"model": await store.model(token.workspace_id)})

    async def stream(request: Request, token: TokenInfo) -> Response:
        if hub is None:
            raise ApiError(503, "unavailable", "the live stream is off (VECTOROS_API_LIVE)")
        workspace = token.workspace_id
        queue, first = hub.subscribe(workspace, request.headers.get("last-event-id"))

        async def frames() -> AsyncIterator[bytes]:
            metrics.live_clients.inc()
            try:
                yield b"retry: 2000\n: connected\n\n"
                for live in first:
                    yield live.frame()
                while True:
                    try:
                        live = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        try:
                            async with asyncio.timeout(keepalive):  # no task per wait
                                live = await queue.get()
                        except TimeoutError:
                            yield b": keep-alive\n\n"
                            continue
                    # everything queued goes out in one write: a client that fell behind
                    # (a burst, a busy server) catches up at a fraction of the cost per event
                    batch: list[bytes] = []
                    while live is not CLOSED:
                        batch.append(live.frame())
                        if queue.empty():
                            break
                        live = queue.get_nowait()
                    if batch:
                        yield b"".join(batch)
                    if live is CLOSED:
                        return
            finally:
                hub.unsubscribe(workspace, queue)
                metrics.live_clients.dec()

        return StreamingResponse(
            frames(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    document = orjson.dumps(openapi_document())

    async def openapi(_: Request) -> Response:
        return Response(document, media_type="application/json")

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in STATIC_FILES:
            return _error(404, "not_found", "no such file")
        body = (STATIC / name).read_bytes()
        return Response(body, media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    middleware = []
    if settings.api_cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.api_cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "If-None-Match", "Last-Event-ID"],
                expose_headers=["ETag", "Retry-After"],
                max_age=600,
            )
        )
    return Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", page),
            Route("/api/openapi.json", openapi),
            Route("/api/v1/me", route("me", me)),
            Route("/api/v1/insights", route("insights", list_insights)),
            Route("/api/v1/insights/{insight_id}", route("insight", one_insight)),
            Route(
                "/api/v1/insights/{insight_id}/answer",
                route("answer", answer),
                methods=["POST"],
            ),
            Route("/api/v1/deals/{deal_id}", route("deal", one_deal)),
            Route("/api/v1/forecasts", route("forecasts", forecasts)),
            Route("/api/v1/stats/rules", route("rule_stats", rule_stats)),
            Route("/api/v1/summary", route("summary", summary)),
            Route("/api/v1/model", route("model", model)),
            Route("/api/v1/stream", route("stream", stream, timed=False)),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
    )


async def _body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (else 413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body may have at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body may have at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _seconds(wait: float) -> str:
    return str(max(1, int(wait + 0.999)))
