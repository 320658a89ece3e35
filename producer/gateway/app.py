"""The gateway's ASGI app (Starlette): ``POST /webhooks/<source>[/<workspace>]``.

Per request, in this order: the source must be enabled (else 404) and the workspace known (from
the route, or ``VECTOROS_GATEWAY_DEFAULT_WORKSPACE``; else 404) -> the body is read up to
``VECTOROS_GATEWAY_MAX_BODY_BYTES`` (else 413) -> the source's authentication is checked on the
raw bytes (else 401) -> JSON is parsed (else 400 ``invalid_json``) -> the normalizer turns it into
validated deal events (a broken payload: 400 with the reason, nothing published) -> every event's
time must be within ``VECTOROS_MAX_CLOCK_SKEW`` ahead of / ``VECTOROS_MAX_EVENT_AGE`` behind the
receive time (else 400 ``implausible_time``, nothing published; the monitor applies the same
bounds against the record timestamp) -> the events
are published, keyed by ``deal_id``, and the broker's acknowledgements awaited (else 503, so the
CRM retries; the deterministic event ids make the retry harmless) -> 200 with the counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from producer.gateway import auth, hubspot, pipedrive, salesforce, twenty
from producer.gateway.ack_links import AckLinks
from producer.gateway.common import ContactLookup, Context, Normalized, PayloadError
from producer.gateway.contacts import ContactResolver
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.settings import SOURCES, WORKSPACE_PATTERN, GatewaySettings
from producer.gateway.slack import AckPublisher, SlackInteractions
from producer.gateway.stages import StageMap
from producer.gateway.twilio import TwilioStatus
from schemas.events import DealEvent, DealUpdated
from vectoros.errors import EventRejected
from vectoros.event_time import TimeBounds

logger = logging.getLogger(__name__)

Normalizer = Callable[[object, Context], Normalized]

NORMALIZERS: dict[str, Normalizer] = {
    "hubspot": hubspot.normalize,
    "pipedrive": pipedrive.normalize,
    "salesforce": salesforce.normalize,
    "twenty": twenty.normalize,
}


class EventPublisher(Protocol):
    """Publishes one request's events and returns once the broker acknowledged all of them."""

    async def send(self, events: Sequence[DealEvent]) -> None: ...


class _TooLarge(Exception):
    pass


def _error(status: int, error: str, detail: str | None = None) -> JSONResponse:
    body: dict[str, str] = {"error": error}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
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


def _request_uri(request: Request, public_url: str | None) -> str:
    """The full URL the CRM called (HubSpot signs it): scheme, host, raw path, raw query."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    suffix = path + (f"?{query}" if query else "")
    if public_url:
        return public_url + suffix
    host = request.headers.get("host") or request.url.netloc
    return f"{request.url.scheme}://{host}{suffix}"


class Gateway:
    """The request handling, with its dependencies; ``app`` is the Starlette application."""

    def __init__(
        self,
        settings: GatewaySettings,
        publisher: EventPublisher,
        metrics: GatewayMetrics,
        *,
        stages: StageMap | None = None,
        clock: Callable[[], float] = time.time,
        contacts: Mapping[str, ContactResolver] | None = None,
        acks: AckPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.contacts = dict(contacts or {})
        self.publisher = publisher
        self.metrics = metrics
        self.stages = stages or StageMap()
        self.clock = clock
        self.time_bounds = TimeBounds.of_seconds(settings.max_clock_skew, settings.max_event_age)
        self.enabled = frozenset(settings.enabled_sources())
        self.slack = SlackInteractions(
            settings.gateway_slack_signing_secret,
            acks,
            max_body_bytes=settings.gateway_max_body_bytes,
            max_age=settings.gateway_max_timestamp_age_seconds,
            publish_timeout=settings.gateway_publish_timeout_seconds,
            clock=clock,
            counted=lambda outcome, state: metrics.acks.answers.labels(
                "slack", outcome, state
            ).inc(),
        )
        self.ack_links = AckLinks(
            settings.gateway_ack_link_key,
            acks,
            publish_timeout=settings.gateway_publish_timeout_seconds,
            clock=clock,
            counted=lambda outcome, state: metrics.acks.answers.labels(
                "email", outcome, state
            ).inc(),
        )
        self.twilio = TwilioStatus(
            settings.gateway_twilio_auth_token,
            lambda request: _request_uri(request, settings.gateway_public_url),
            counted=lambda status: metrics.acks.sms_status.labels(status).inc(),
            rejected=lambda reason: metrics.acks.answers.labels("twilio", reason, "-").inc(),
        )
        self.app = Starlette(
            routes=[
                Route("/webhooks/{source}", self.handle, methods=["POST"]),
                Route("/webhooks/{source}/{workspace}", self.handle, methods=["POST"]),
                Route("/slack/interactions", self.slack.handle, methods=["POST"]),
                Route("/acks/{token}", self.ack_links.handle, methods=["GET", "POST"]),
                Route("/twilio/status", self.twilio.handle, methods=["POST"]),
            ]
        )

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        source = request.path_params["source"]
        label = source if source in SOURCES else "other"
        response = await self._handle(request, source, label)
        self.metrics.requests.labels(label, str(response.status_code)).inc()
        self.metrics.request_seconds.labels(label).observe(time.perf_counter() - started)
        return response

    def _reject(self, label: str, status: int, reason: str, detail: str | None = None) -> Response:
        self.metrics.rejected.labels(label, reason).inc()
        logger.warning("%s webhook rejected (%d %s): %s", label, status, reason, detail or "-")
        return _error(status, reason, detail)

    def _workspace(self, request: Request) -> str | None:
        workspace: str | None = request.path_params.get("workspace")
        if workspace is None:
            return self.settings.gateway_default_workspace
        if not WORKSPACE_PATTERN.match(workspace):
            return None
        allowed = self.settings.gateway_workspaces
        return workspace if not allowed or workspace in allowed else None

    async def _handle(self, request: Request, source: str, label: str) -> Response:
        if source not in self.enabled:
            return self._reject(label, 404, "unknown_source", "no such source, or not configured")
        workspace = self._workspace(request)
        if workspace is None:
            return self._reject(label, 404, "unknown_workspace")
        limit = self.settings.gateway_max_body_bytes
        try:
            body = await _read_body(request, limit)
        except _TooLarge:
            return self._reject(label, 413, "too_large", f"the body limit is {limit} bytes")
        except ClientDisconnect:
            self.metrics.rejected.labels(label, "disconnected").inc()
            return Response(status_code=400)  # nobody is listening any more
        try:
            self._authenticate(source, request, body)
        except auth.AuthError as exc:
            self.metrics.auth_failures.labels(source, exc.reason).inc()
            logger.warning("%s webhook unauthorized: %s", source, exc.reason)
            return _error(401, exc.reason)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._reject(label, 400, "invalid_json", "the body is not UTF-8 JSON")
        ctx = Context(source, workspace, self.stages, self.settings.gateway_default_currency)
        try:
            result = NORMALIZERS[source](payload, ctx)
        except PayloadError as exc:
            return self._reject(label, 400, exc.reason, exc.detail)
        events = result.sorted_events()
        if result.lookups:
            resolver = self.contacts.get(source)
            if resolver is None:  # no CRM credentials to read the contacts with
                result.ignore("no_contact_lookup", len(result.lookups))
            else:
                try:
                    looked = await self._contacts(resolver, ctx, result.lookups)
                except Exception as exc:  # the CRM retries the webhook
                    self.metrics.publish_failures.labels(source).inc()
                    reason = type(exc).__name__
                    logger.error("%s webhook: reading contacts failed (%s)", source, reason)
                    return _error(503, "unavailable", "the CRM could not be read; retry")
                events = sorted([*events, *looked], key=lambda e: e.occurred_at)
        received_ms = int(self.clock() * 1000)
        try:
            for event in events:
                self.time_bounds.check(event.occurred_at, received_ms, "the time it was received")
        except EventRejected as exc:
            return self._reject(label, 400, exc.reason, exc.detail)
        if events:
            try:
                await asyncio.wait_for(
                    self.publisher.send(events), self.settings.gateway_publish_timeout_seconds
                )
            except Exception as exc:  # any failure: the CRM must retry
                self.metrics.publish_failures.labels(source).inc()
                logger.error(
                    "%s webhook: publishing %d events failed (%s); answered 503",
                    source,
                    len(events),
                    type(exc).__name__,
                )
                return _error(503, "unavailable", "the events could not be published; retry")
        for event in events:
            self.metrics.events_published.labels(source, event.type).inc()
        for reason, count in result.ignored.items():  # counted once, not again on a retry
            self.metrics.ignored.labels(source, reason).inc(count)
        logger.debug("%s webhook: %d events, ignored %s", source, len(events), dict(result.ignored))
        return JSONResponse({"published": len(events), "ignored": dict(result.ignored)})

    async def _contacts(
        self, resolver: ContactResolver, ctx: Context, lookups: Sequence[ContactLookup]
    ) -> list[DealEvent]:
        """One ``deal.updated`` with the current ``contacts`` and ``account_domains`` per deal
        named (its latest lookup's id and time: a redelivery has the same event id)."""
        latest: dict[str, ContactLookup] = {}
        for lookup in lookups:
            if lookup.deal not in latest or lookup.at >= latest[lookup.deal].at:
                latest[lookup.deal] = lookup
        out: list[DealEvent] = []
        for lookup in latest.values():
            addresses, domains = await resolver.resolve(lookup.crm_deal_id)
            changes: dict[str, Any] = {"contacts": addresses}
            if domains is not None:
                changes["account_domains"] = domains
            out.append(
                DealUpdated.model_validate(
                    {
                        "event_id": lookup.eid,
                        "workspace_id": ctx.workspace,
                        "deal_id": lookup.deal,
                        "occurred_at": lookup.at,
                        "changes": changes,
                    }
                )
            )
        return out

    def _authenticate(self, source: str, request: Request, body: bytes) -> None:
        s = self.settings
        max_age = s.gateway_max_timestamp_age_seconds
        if source == "hubspot" and s.gateway_hubspot_client_secret is not None:
            uri = _request_uri(request, s.gateway_public_url)
            auth.verify_hubspot(
                s.gateway_hubspot_client_secret,
                request.headers,
                request.method,
                uri,
                body,
                now=self.clock(),
                max_age=max_age,
            )
        elif source == "twenty" and s.gateway_twenty_secret is not None:
            auth.verify_twenty(
                s.gateway_twenty_secret, request.headers, body, now=self.clock(), max_age=max_age
            )
        elif (
            source == "pipedrive"
            and s.gateway_pipedrive_username is not None
            and s.gateway_pipedrive_password is not None
        ):
            auth.verify_basic(
                s.gateway_pipedrive_username, s.gateway_pipedrive_password, request.headers
            )
        elif source == "salesforce" and s.gateway_salesforce_token is not None:
            auth.verify_bearer(s.gateway_salesforce_token, request.headers)
        else:  # pragma: no cover - enabled sources always have their credential
            raise auth.AuthError("missing_credentials")


def build_app(
    settings: GatewaySettings,
    publisher: EventPublisher,
    metrics: GatewayMetrics,
    *,
    stages: StageMap | None = None,
    clock: Callable[[], float] = time.time,
    contacts: Mapping[str, ContactResolver] | None = None,
    acks: AckPublisher | None = None,
) -> Starlette:
    """The gateway's ASGI app. ``publisher.send(events)`` must return only once the broker has
    acknowledged those events (``service.KafkaEventPublisher`` does). ``contacts`` reads a
    deal's contacts from a source's CRM (``producer.gateway.contacts``); ``acks`` publishes the
    answers of Slack buttons and email links."""
    return Gateway(
        settings, publisher, metrics, stages=stages, clock=clock, contacts=contacts, acks=acks
    ).app
