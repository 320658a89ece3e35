"""The capture service's ASGI app (Starlette).

- ``POST /capture/webhook/<workspace>``: the generic JSON webhook (``producer.capture.webhook``):
  signature (401) -> JSON and shape (400) -> items not captured before for that user (the
  captured log) -> matched to the workspace's open deals -> published and acknowledged (503 if
  the broker fails: the tool retries; ids are stable) -> 200 with the counts.
- ``POST /capture/gmail/push?token=...`` (when Gmail is configured): a Pub/Sub push of a Gmail
  notification (``producer.capture.gmail.GmailPush``): wrong token 403, bad body 400, synced 204,
  sync failed 503 (Pub/Sub redelivers).
- ``POST /capture/gcal/notify`` (when Google Calendar is configured): an ``events.watch``
  channel notification (``producer.capture.gcal.CalendarPush``): unknown channel or wrong
  channel token 403, unknown resource state 400, ``sync`` acknowledged, synced 204, sync failed
  503 (Google retries).
- ``POST /capture/graph/notify`` (when Microsoft Graph is configured): ``?validationToken=``
  (the subscription handshake) answered 200 ``text/plain`` with the token; otherwise change
  notifications (``producer.capture.graph.GraphPush``): no item with a stored subscription and
  its ``clientState`` 403, bad body 400, synced 202, sync failed 503 (Graph retries).
- ``POST /capture/oauth/<provider>/start`` (when connecting is configured; signed like the
  webhook, body ``{"workspace_id": ...}`` of an opted-in workspace): ``{"authorize_url"}`` to
  send the user's browser to (``producer.capture.oauth``); ``GET
  /capture/oauth/<provider>/callback?code=&state=``: the code exchanged, the connection stored
  (200 text), or 400 with the reason (declined, unknown or expired state, no offline access).
- ``DELETE /capture/users/<user_id>``: disconnect: every token, cursor and captured id kept for
  the user is deleted (signed like the webhook, over an empty body) -> 200 with the rows deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from producer.capture import webhook
from producer.capture.gcal import CalendarPush
from producer.capture.gmail import GmailPush
from producer.capture.graph import GraphPush, validation_answer
from producer.capture.matcher import CapturedEmail, EventPublisher, Matcher
from producer.capture.metrics import CaptureMetrics
from producer.capture.oauth import OAuthFailed, OAuthFlow
from producer.capture.store import CaptureStore
from schemas.events import DealEvent

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20


def build_app(
    matcher: Matcher,
    publisher: EventPublisher,
    store: CaptureStore,
    secret: str,
    clock: Callable[[], float] = time.time,
    gmail: GmailPush | None = None,
    gcal: CalendarPush | None = None,
    graph: GraphPush | None = None,
    oauth: OAuthFlow | None = None,
    metrics: CaptureMetrics | None = None,
) -> Starlette:
    def check(request: Request, body: bytes) -> JSONResponse | None:
        try:
            webhook.verify(
                secret,
                request.headers.get(webhook.SIGNATURE),
                request.headers.get(webhook.TIMESTAMP),
                body,
                clock(),
            )
        except webhook.SignatureError as exc:
            logger.warning("capture request refused: %s", exc.reason)
            return JSONResponse({"error": exc.reason}, status_code=401)
        return None

    async def receive(request: Request) -> JSONResponse:
        workspace = request.path_params["workspace"]
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "too_large"}, status_code=413)
        refused = check(request, body)
        if refused is not None:
            return refused
        try:
            payload = webhook.Payload.model_validate_json(body)
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]
            )
            return JSONResponse({"error": "invalid_payload", "detail": detail}, status_code=400)
        now = clock()
        received = dt.datetime.fromtimestamp(now, dt.UTC)
        keys = {webhook.item_key(item): item for item in payload.items}
        # published first, logged as captured after the broker acknowledged: a crash in between
        # publishes them again on the retry (stable event ids: the monitor drops the copies),
        # never loses them
        new = set(keys) - store.known(payload.user_id, "webhook", keys)
        events: list[DealEvent] = []
        for key, item in keys.items():
            if key not in new:
                continue
            msg = webhook.captured(workspace, item, received)
            if isinstance(msg, CapturedEmail):
                events.extend(matcher.email(msg))
            else:
                events.extend(matcher.meeting(msg))
        try:
            await publisher.send(events)
        except Exception:
            logger.exception("capture: publishing %d events failed", len(events))
            return JSONResponse({"error": "unavailable"}, status_code=503)
        store.first_seen(payload.user_id, "webhook", new, int(now * 1000))
        return JSONResponse({"items": len(payload.items), "new": len(new), "events": len(events)})

    async def disconnect(request: Request) -> JSONResponse:
        refused = check(request, await request.body())
        if refused is not None:
            return refused
        deleted = store.disconnect(request.path_params["user_id"])
        logger.info("capture: a user disconnected, %d rows deleted", deleted)
        return JSONResponse({"deleted": deleted})

    async def gmail_push(request: Request) -> Response:
        assert gmail is not None
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "too_large"}, status_code=413)
        outcome = await gmail.handle(
            body, request.query_params.get("token"), store, matcher, publisher
        )
        if outcome.status == 204:
            return Response(status_code=204)
        return JSONResponse(outcome.body, status_code=outcome.status)

    async def gcal_notify(request: Request) -> Response:
        assert gcal is not None
        outcome = await gcal.handle(request.headers, store, matcher, publisher)
        if outcome.status == 204:
            return Response(status_code=204)
        return JSONResponse(outcome.body, status_code=outcome.status)

    async def graph_notify(request: Request) -> Response:
        assert graph is not None
        if "validationToken" in request.query_params:
            token = validation_answer(request.query_params.get("validationToken"))
            if token is None:
                return JSONResponse({"error": "bad_validation_token"}, status_code=400)
            return PlainTextResponse(token, status_code=200)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "too_large"}, status_code=413)
        outcome = await graph.handle(body, store, matcher, publisher)
        return JSONResponse(outcome.body, status_code=outcome.status)

    async def oauth_start(request: Request) -> JSONResponse:
        assert oauth is not None
        provider = request.path_params["provider"]
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "too_large"}, status_code=413)
        refused = check(request, body)
        if refused is not None:
            return refused
        if provider not in oauth.providers:
            return JSONResponse({"error": "unknown_provider"}, status_code=404)
        try:
            workspace = str(orjson.loads(body)["workspace_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return JSONResponse({"error": "invalid_payload"}, status_code=400)
        policy = matcher.policies.get(workspace)
        if policy is None or not policy.enabled:
            return JSONResponse({"error": "workspace_not_opted_in"}, status_code=400)
        return JSONResponse({"authorize_url": oauth.start(provider, workspace)})

    async def oauth_callback(request: Request) -> Response:
        assert oauth is not None
        provider = request.path_params["provider"]
        if provider not in oauth.providers:
            return PlainTextResponse("unknown provider", status_code=404)
        query = request.query_params
        if query.get("error"):  # the user declined (access_denied) or the provider failed
            await oauth.decline(provider, query.get("state"))
            return PlainTextResponse("not connected: authorization declined", status_code=400)
        try:
            await oauth.finish(provider, query.get("code"), query.get("state"))
        except OAuthFailed as exc:
            return PlainTextResponse(f"not connected: {exc.reason}", status_code=400)
        return PlainTextResponse("connected: you can close this page")

    def counted(
        source: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            response = await handler(request)
            if metrics is not None:
                metrics.requests.labels(source, str(response.status_code)).inc()
            return response

        return run

    routes = [
        Route("/capture/webhook/{workspace}", counted("webhook", receive), methods=["POST"]),
        Route("/capture/users/{user_id}", counted("disconnect", disconnect), methods=["DELETE"]),
    ]
    if gmail is not None:
        routes.append(Route("/capture/gmail/push", counted("gmail", gmail_push), methods=["POST"]))
    if oauth is not None:
        start, back = counted("oauth", oauth_start), counted("oauth", oauth_callback)
        routes.append(Route("/capture/oauth/{provider}/start", start, methods=["POST"]))
        routes.append(Route("/capture/oauth/{provider}/callback", back, methods=["GET"]))
    if gcal is not None:
        routes.append(Route("/capture/gcal/notify", counted("gcal", gcal_notify), methods=["POST"]))
    if graph is not None:
        notify = counted("graph", graph_notify)
        routes.append(Route("/capture/graph/notify", notify, methods=["POST"]))
    return Starlette(routes=routes)
