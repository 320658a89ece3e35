"""``vectoros notify``: insight events -> Slack, signed webhooks and the console.

A ``NotifierHandler`` on the consume loop (``vectoros.consume_loop``): fetch a batch from
``deal-insights`` (group ``vectoros-notifier``) -> pick the events worth telling people about
-> deliver them to every destination (destinations concurrently, each destination in order) ->
record every outcome in the notification log -> commit the batch's offsets. A crash before the
commit replays the batch; the log (``log.py``) turns the replay into no-ops, so nobody gets a
message twice.

Selection (metric ``vectoros_notifier_skipped_total{reason}``):

- ``lifecycle``: only ``raised`` and ``escalated`` are announced, plus ``resolved`` with
  ``notify_resolved``. Any other lifecycle (e.g. a later ``enriched``, which re-publishes better
  text for an insight already announced) is skipped without being parsed further.
- ``below_threshold``: priority below ``notify_min_priority`` (default high).
- ``invalid``: not a valid insight event (logged with topic/partition/offset, then skipped).
- ``already_sent`` / ``already_failed``: the log has a final outcome for this destination.
- ``claimed_elsewhere``: another notifier (after a rebalance) took over the delivery.

Grouping window for the model's text: while an enricher runs (it announces itself in table
``enricher_instances``), the raised and escalated insights of a batch that it enriches (at or
above its ``enrich_min_priority``) are held up to ``notify_enrichment_window_seconds`` (default
10 s) from when the batch was read, until the enrichment log (table ``enrichments``) has the
outcome of each. An insight the model rewrote is sent with that text (title, description,
actions, source); one the enricher gave up on, or still waiting when the window ends, is sent
with the rule text. No enricher running (no key, ``VECTOROS_LLM=off``) or a window of 0 means
no wait at all; an unreadable log is treated as "no enrichment". Metric:
``vectoros_notifier_enrichment_waits_total{status}``.

A destination that is down costs at most its retry budget per notification (and, once its
circuit opens, nothing), is recorded as ``failed``, and never blocks the others for longer. A
database error stops the batch; the consume loop (``vectoros.consume_loop``) re-runs it
(idempotently) with capped exponential back-off from ``notify_db_retry_seconds`` up to
``notify_db_retry_max_seconds``, and waits the same way for PostgreSQL or the broker at start.
Stopping (the stop event) interrupts backoff and rate-limit waits at once and lets an HTTP
request already on the wire finish (bounded by ``notify_http_timeout_seconds``); the unfinished
batch is not committed and resumes on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncpg
import httpx
import orjson
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumer.notifier.acks import AckLookup, PgAcks
from consumer.notifier.console import ConsoleClient, format_insight
from consumer.notifier.delivery import (
    CircuitBreaker,
    Clock,
    DeliveryResult,
    InvalidDestination,
    Random,
    RateLimiter,
    RetryPolicy,
    Sleep,
    deliver,
    destination_key,
    error_text,
    redact_url,
    status_code_of,
)
from consumer.notifier.digest import console_text, insight_of, slack_message, webhook_body
from consumer.notifier.directory import Directory, load_directory
from consumer.notifier.email import EmailClient, build_email
from consumer.notifier.flood import FloodControl, Item, Message
from consumer.notifier.log import ClaimState, NotificationLog, NotificationRef, NotificationStore
from consumer.notifier.metrics import NotifierEnrichmentMetrics, NotifierMetrics
from consumer.notifier.outbox import FloodStore, PgFloodStore
from consumer.notifier.routing import Policy, QuietHours, load_policy
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.slack import SlackClient, build_message, deal_url
from consumer.notifier.sms import SmsClient, insight_text, message_text
from consumer.notifier.teams import TeamsClient, insight_card, message_card
from consumer.notifier.webhook import WebhookClient, payload, webhook_id
from schemas.insights import InsightEvent, Lifecycle, Priority, insight_adapter
from vectoros import __version__
from vectoros.consume_loop import (
    Broker,
    ConsumeLoop,
    Database,
    KafkaBroker,
    LoopOptions,
    Output,
    Records,
    Resources,
    Subscription,
)
from vectoros.db import TRANSIENT_ERRORS, PgPool, migrate
from vectoros.enrichments import EnrichmentKey, EnrichmentLookup, Outcome, PgEnrichmentLookup
from vectoros.errors import ConfigError, DeliveryError
from vectoros.logs import redact_logs, scrub
from vectoros.ops_server import Health

logger = logging.getLogger(__name__)

STALE_GRACE_SECONDS = 20.0
BUSY_POLL_SECONDS = 0.5
ENRICHMENT_POLL_SECONDS = 0.2
DB_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)

Send = Callable[[InsightEvent, str], Awaitable[None]]
SendMessage = Callable[[Message, str], Awaitable[None]]
RANK_NAMES = {p.rank: p.value for p in Priority}
PERSONAL = frozenset({"email", "sms"})
CRITICAL = Priority.CRITICAL.rank
_HOLDABLE = frozenset(
    {Lifecycle.RAISED, Lifecycle.RESOLVED}
)  # what an ack or snooze holds  # destinations of one person, routed by the insight's owner


@dataclass(frozen=True)
class NotificationMeta:
    """What the log stores next to a notification's key (for operators and reports)."""

    workspace_id: str
    deal_id: str
    rule: str
    priority: str


class Stopping(Exception):
    """Raised by the service's sleep when the stop event is set."""


@dataclass(frozen=True)
class Destination:
    """One place notifications go. ``key``/``label`` are safe to store and log; the URL is not."""

    kind: str  # slack | webhook | console: the metric label
    key: str
    label: str
    at_most_once: bool
    min_interval: float
    send: Send = field(repr=False)
    send_message: SendMessage | None = field(default=None, repr=False)
    names: tuple[str, ...] = ()  # what the routing policy calls it: slack:0, webhook:1, console


def build_destinations(
    settings: NotifierSettings,
    http: httpx.AsyncClient,
    *,
    console_stream: TextIO | None = None,
    wall_clock: Clock = time.time,
    directory: Directory | None = None,
) -> list[Destination]:
    """Every configured destination, each once (a URL listed twice is one destination)."""
    timeout = settings.notify_http_timeout_seconds
    template = settings.crm_deal_url_template
    found: dict[str, Destination] = {}

    def add(dest: Destination) -> None:
        known = found.get(dest.key)
        if known is None:
            found[dest.key] = dest
            return
        logger.warning("destination %s is configured twice; using it once", dest.label)
        found[dest.key] = dataclasses.replace(known, names=known.names + dest.names)

    def posting(
        kind: str,
        client: SlackClient | TeamsClient,
        raw: str,
        position: int,
        render_insight: Callable[..., Any],
        render_message: Callable[..., Any],
        at_most_once: bool,
        min_interval: float,
    ) -> Destination:
        """A destination that posts one rendered JSON body per notification (Slack, Teams)."""

        async def send(insight: InsightEvent, _msg_id: str) -> None:
            await client.post(render_insight(insight, deal_url_template=template))

        async def send_message(message: Message, _msg_id: str) -> None:
            await client.post(render_message(message, deal_url_template=template))

        return Destination(
            kind=kind,
            key=destination_key(kind, raw),
            label=redact_url(kind, raw),
            at_most_once=at_most_once,
            min_interval=min_interval,
            send=send,
            send_message=send_message,
            names=(f"{kind}:{position}",),
        )

    for position, url in enumerate(settings.slack_webhook_urls):
        slack = SlackClient(http, url, timeout=timeout, wall_clock=wall_clock)
        add(
            posting(
                "slack",
                slack,
                url.get_secret_value(),
                position,
                build_message,
                slack_message,
                settings.slack_at_most_once,
                settings.slack_min_interval_seconds,
            )
        )
    for position, url in enumerate(settings.teams_webhook_urls):
        teams = TeamsClient(http, url, timeout=timeout, wall_clock=wall_clock)
        add(
            posting(
                "teams",
                teams,
                url.get_secret_value(),
                position,
                insight_card,
                message_card,
                settings.teams_at_most_once,
                settings.teams_min_interval_seconds,
            )
        )
    for position, url in enumerate(settings.webhook_urls):
        assert settings.webhook_secret is not None  # enforced by the settings validator
        hook = WebhookClient(
            http, url, settings.webhook_secret, timeout=timeout, wall_clock=wall_clock
        )

        async def send_webhook(
            insight: InsightEvent, msg_id: str, hook: WebhookClient = hook
        ) -> None:
            await hook.post(msg_id, payload(insight))

        async def send_webhook_message(
            message: Message, msg_id: str, hook: WebhookClient = hook
        ) -> None:
            await hook.post(msg_id, webhook_body(message))

        raw = url.get_secret_value()
        add(
            Destination(
                kind="webhook",
                key=destination_key("webhook", raw),
                label=redact_url("webhook", raw),
                at_most_once=False,
                min_interval=settings.webhook_min_interval_seconds,
                send=send_webhook,
                send_message=send_webhook_message,
                names=(f"webhook:{position}",),
            )
        )
    if settings.smtp_host and directory is not None:
        smtp = EmailClient(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=timeout,
            validate_certs=settings.smtp_validate_certs,
        )
        for owner_id, person in directory.owners.items():
            if person.email is None:
                continue

            async def send_email(
                insight: InsightEvent,
                msg_id: str,
                address: str = person.email,
                name: str | None = person.name,
            ) -> None:
                await smtp.send(
                    build_email(
                        insight,
                        sender=settings.email_from,
                        to=address,
                        to_name=name,
                        message_id=msg_id,
                        deal_url_template=template,
                    )
                )

            async def send_email_message(
                message: Message,
                msg_id: str,
                address: str = person.email,
                name: str | None = person.name,
            ) -> None:
                await smtp.send(
                    build_email(
                        message,
                        sender=settings.email_from,
                        to=address,
                        to_name=name,
                        message_id=msg_id,
                        deal_url_template=template,
                    )
                )

            add(
                Destination(
                    kind="email",
                    key=destination_key("email", person.email.lower()),
                    label=f"email:{owner_id}",
                    at_most_once=settings.email_at_most_once,
                    min_interval=settings.email_min_interval_seconds,
                    send=send_email,
                    send_message=send_email_message,
                    names=(f"email:{owner_id}",),
                )
            )
    if (
        settings.twilio_account_sid
        and settings.twilio_auth_token is not None
        and settings.sms_from
        and directory is not None
    ):
        twilio = SmsClient(
            http,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            sender=settings.sms_from,
            status_callback=settings.sms_status_callback_url,
            base_url=settings.twilio_api_url,
            timeout=timeout,
            wall_clock=wall_clock,
        )
        for owner_id, person in directory.owners.items():
            if person.phone is None:
                continue

            async def send_sms(insight: InsightEvent, _id: str, to: str = person.phone) -> None:
                await twilio.send(to, insight_text(insight, deal_url_template=template))

            async def send_sms_message(message: Message, _id: str, to: str = person.phone) -> None:
                await twilio.send(to, message_text(message, deal_url_template=template))

            add(
                Destination(
                    kind="sms",
                    key=destination_key("sms", person.phone),
                    label=f"sms:{owner_id}",
                    at_most_once=settings.sms_at_most_once,
                    min_interval=settings.sms_min_interval_seconds,
                    send=send_sms,
                    send_message=send_sms_message,
                    names=(f"sms:{owner_id}",),
                )
            )
    if settings.notify_console:
        console = ConsoleClient(console_stream)

        async def send_console(insight: InsightEvent, _msg_id: str) -> None:
            await console.post(format_insight(insight, deal_url(template, insight)))

        async def send_console_message(message: Message, _msg_id: str) -> None:
            await console.post(console_text(message, deal_url_template=template))

        add(
            Destination(
                kind="console",
                key=destination_key("console", "stdout"),
                label="console",
                at_most_once=False,
                min_interval=0.0,
                send=send_console,
                send_message=send_console_message,
                names=("console",),
            )
        )
    return list(found.values())


def secrets_of(settings: NotifierSettings) -> list[str]:
    """Every secret string a log line or error text must never contain."""
    urls = (*settings.slack_webhook_urls, *settings.webhook_urls, *settings.teams_webhook_urls)
    values = [u.get_secret_value() for u in urls]
    if settings.webhook_secret is not None:
        values.append(settings.webhook_secret.get_secret_value())
    if settings.smtp_password is not None:
        values.append(settings.smtp_password.get_secret_value())
    if settings.twilio_auth_token is not None:
        values.append(settings.twilio_auth_token.get_secret_value())
    return sorted(values, key=len, reverse=True)


class _Hooks:
    """Reports attempts of one notification to the log."""

    def __init__(
        self, log: NotificationStore, ref: NotificationRef, secrets: Sequence[str]
    ) -> None:
        self._log = log
        self._ref = ref
        self._secrets = list(secrets)

    async def begin_attempt(self) -> bool:
        return await self._log.begin_attempt(self._ref)

    async def attempt_failed(self, error: DeliveryError) -> None:
        text = scrub(error_text(error), self._secrets)
        await self._log.attempt_failed(self._ref, status_code_of(error), text)


class Notifier:
    """Selection and delivery of insight events; no Kafka in here (see :func:`run_notifier`)."""

    def __init__(
        self,
        settings: NotifierSettings,
        destinations: Sequence[Destination],
        log: NotificationStore,
        metrics: NotifierMetrics,
        stop: asyncio.Event,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
        rand: Random = random.random,
        secrets: Sequence[str] = (),
        enrichments: EnrichmentLookup | None = None,
        enrichment_metrics: NotifierEnrichmentMetrics | None = None,
        routes: Callable[[InsightEvent], Collection[str]] | None = None,
    ) -> None:
        self.settings = settings
        self._routes = routes  # the destination keys of an insight (None: every destination)
        self.enrichments = enrichments
        self.enrichment_metrics = enrichment_metrics
        self.destinations = list(destinations)
        self.log = log
        self.metrics = metrics
        self._stop = stop
        self._clock = clock
        self._sleep: Sleep = sleep or self._stoppable_sleep
        self._rand = rand
        self._secrets = list(secrets)
        self.policy = RetryPolicy(
            max_attempts=settings.notify_max_attempts,
            base_seconds=settings.notify_backoff_base_seconds,
            cap_seconds=settings.notify_backoff_cap_seconds,
            retry_after_max_seconds=settings.notify_retry_after_max_seconds,
        )
        self.limiter = RateLimiter(clock, self._sleep)
        self._breakers = {
            d.key: CircuitBreaker(
                settings.notify_circuit_failures, settings.notify_circuit_open_seconds, clock
            )
            for d in self.destinations
        }
        notified = {Lifecycle.RAISED.value, Lifecycle.ESCALATED.value}
        if settings.notify_resolved:
            notified.add(Lifecycle.RESOLVED.value)
        self._lifecycles = frozenset(notified)
        # Outcomes known in this process but not yet in the log (a database error came between).
        self._unrecorded: dict[NotificationRef, DeliveryResult] = {}
        # Requests whose outcome this process does not know (cancelled while on the wire).
        self._uncertain: set[NotificationRef] = set()

    async def _stoppable_sleep(self, seconds: float) -> None:
        if self._stop.is_set():
            raise Stopping
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
            raise Stopping

    # -- selection ------------------------------------------------------------------------------

    def select(self, value: bytes | None, where: str = "") -> InsightEvent | None:
        """The insight event in ``value`` if it is to be announced, else None (metric counted)."""
        try:
            raw = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            raw = None
        if not isinstance(raw, dict):
            self.metrics.skipped.labels(reason="invalid").inc()
            logger.warning("skipping a record that is not a JSON object (%s)", where)
            return None
        if raw.get("lifecycle") not in self._lifecycles:
            self.metrics.skipped.labels(reason="lifecycle").inc()
            return None
        try:
            insight = insight_adapter.validate_python(raw)
        except ValidationError as exc:
            self.metrics.skipped.labels(reason="invalid").inc()
            logger.warning(
                "skipping an invalid insight event (%s): %d error(s), first: %s",
                where,
                exc.error_count(),
                exc.errors(include_input=False, include_url=False)[0]["msg"],
            )
            return None
        if insight.priority.rank < self.settings.notify_min_priority.rank:
            self.metrics.skipped.labels(reason="below_threshold").inc()
            return None
        return insight

    # -- the model's text -------------------------------------------------------------------------

    async def with_enrichments(self, insights: Sequence[InsightEvent]) -> list[InsightEvent]:
        """``insights``, those the enricher rewrote with its text; waits up to the grouping
        window for them (see the module docstring). Never raises for the log's sake."""
        window = self.settings.notify_enrichment_window_seconds
        if self.enrichments is None or window <= 0 or not insights:
            return list(insights)
        started = self._clock()
        try:
            floor = await self.enrichments.live_min_priority()
        except DB_ERRORS as exc:
            logger.warning("enrichment log unreadable (%s); sending the rule text", exc)
            return list(insights)
        if floor is None:
            return list(insights)
        held = {
            EnrichmentKey.of(i)
            for i in insights
            if i.lifecycle in (Lifecycle.RAISED, Lifecycle.ESCALATED)
            and i.priority.rank >= floor.rank
        }
        if not held:
            return list(insights)
        logger.debug("holding %d notification(s) for the model's text", len(held))
        found: dict[EnrichmentKey, Outcome] = {}
        unavailable = False
        while True:
            try:
                found.update(await self.enrichments.outcomes([k for k in held if k not in found]))
            except DB_ERRORS as exc:
                logger.warning("enrichment log unreadable (%s); sending the rule text", exc)
                unavailable = True
                break
            remaining = started + window - self._clock()
            if len(found) == len(held) or remaining <= 0:
                break
            try:
                await self._sleep(min(ENRICHMENT_POLL_SECONDS, remaining))
            except Stopping:
                break  # process() sees the stop event and leaves the batch uncommitted
        self._count_waits(held, found, unavailable, self._clock() - started)
        out = []
        for insight in insights:
            outcome = found.get(EnrichmentKey.of(insight))
            if outcome is not None and outcome.stored is not None:
                insight = outcome.stored.apply(insight)
            out.append(insight)
        return out

    def _count_waits(
        self,
        held: set[EnrichmentKey],
        found: Mapping[EnrichmentKey, Outcome],
        unavailable: bool,
        waited: float,
    ) -> None:
        metrics = self.enrichment_metrics
        if metrics is None:
            return
        metrics.wait_seconds.observe(max(0.0, waited))
        for key in held:
            outcome = found.get(key)
            if outcome is not None:
                metrics.waits.labels(status=outcome.status).inc()
            else:
                metrics.waits.labels(status="unavailable" if unavailable else "timeout").inc()

    # -- delivery -------------------------------------------------------------------------------

    async def process(self, insights: Sequence[InsightEvent]) -> bool:
        """Deliver ``insights`` to every destination and record the outcomes.

        True when all are recorded; False when the stop event interrupted the batch (nothing
        is lost: the unrecorded rest is redone on the next start). A database error is raised
        once every destination has stopped; running the same batch again then resends nothing
        already delivered (the log, and the outcomes kept in memory until recorded).
        """
        if not insights:
            return True
        results = await asyncio.gather(
            *(self._run_destination(d, insights) for d in self.destinations),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return True
        for error in errors:
            if not isinstance(error, (Stopping, *DB_ERRORS)):
                raise error  # a bug, or a cancellation: crash loudly rather than loop
        if any(isinstance(e, Stopping) for e in errors) or self._stop.is_set():
            return False
        raise errors[0]

    async def _run_destination(self, dest: Destination, insights: Sequence[InsightEvent]) -> None:
        for insight in insights:
            if self._stop.is_set():
                raise Stopping
            if self._routes is not None and dest.key not in self._routes(insight):
                continue
            await self.notify(dest, insight)

    async def notify(self, dest: Destination, insight: InsightEvent) -> None:
        """Deliver one insight to one destination, at most once per the log."""
        ref = NotificationRef(insight.insight_id, insight.lifecycle.value, dest.key)
        meta = NotificationMeta(
            insight.workspace_id, insight.deal_id, insight.rule.value, insight.priority.value
        )

        async def send(msg_id: str) -> None:
            await dest.send(insight, msg_id)

        await self._deliver(dest, ref, meta, send)

    async def notify_message(self, dest: Destination, message: Message) -> None:
        """Deliver one flood-control message to its destination, at most once per the log
        (keyed by the message id; ``lifecycle`` is the message's kind)."""
        ref = NotificationRef(message.message_id, message.kind, dest.key)
        first = max(message.items, key=lambda i: i.rank) if message.items else None
        rank = max((r for r, _ in message.by_rank), default=first.rank if first else 0)
        meta = NotificationMeta(
            message.workspace_id,
            first.deal_id if first and len(message.items) == 1 else "*",
            first.rule if first and len(message.items) == 1 else message.kind,
            RANK_NAMES.get(rank, "high"),
        )
        send_message = dest.send_message
        if send_message is None:  # every built destination has one
            raise RuntimeError(f"{dest.label} cannot send flood-control messages")

        async def send(msg_id: str) -> None:
            await send_message(message, msg_id)

        await self._deliver(dest, ref, meta, send)

    async def _deliver(
        self,
        dest: Destination,
        ref: NotificationRef,
        meta: NotificationMeta,
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        known = self._unrecorded.get(ref)
        if known is not None:
            await self._record(dest, ref, known)
            return
        while True:
            claim = await self.log.claim(
                ref,
                destination_type=dest.kind,
                destination_label=dest.label,
                workspace_id=meta.workspace_id,
                deal_id=meta.deal_id,
                rule=meta.rule,
                priority=meta.priority,
                own_requests_settled=ref not in self._uncertain,
            )
            if claim.state is not ClaimState.BUSY:
                break
            await self._sleep(BUSY_POLL_SECONDS)
        if claim.state is ClaimState.SENT:
            self.metrics.skipped.labels(reason="already_sent").inc()
            return
        if claim.state is ClaimState.FAILED:
            self.metrics.skipped.labels(reason="already_failed").inc()
            return
        self._uncertain.discard(ref)
        if claim.state is ClaimState.UNKNOWN_OUTCOME and dest.at_most_once:
            result = DeliveryResult(
                "failed",
                claim.attempts,
                "unknown_outcome",
                None,
                "a notifier stopped mid-request; the message may or may not have arrived and "
                "is not resent (at-most-once destination)",
            )
            self._count(dest, result)
            await self._record(dest, ref, result)
            return
        if claim.state is ClaimState.UNKNOWN_OUTCOME:
            logger.info(
                "resending insight %s (%s) to %s: a previous attempt's outcome is unknown",
                ref.insight_id,
                ref.lifecycle,
                dest.label,
            )
        breaker = self._breakers[dest.key]
        if breaker.is_open:
            result = DeliveryResult(
                "failed", claim.attempts, "circuit_open", None, "destination circuit open"
            )
            self._count(dest, result)
            await self._record(dest, ref, result)
            return

        msg_id = webhook_id(ref.insight_id, ref.lifecycle, dest.key)

        async def attempt() -> None:
            self._uncertain.add(ref)
            try:
                await send(msg_id)
            except DeliveryError:
                self._uncertain.discard(ref)
                raise
            except Exception as exc:  # a bug building the payload: record it, do not loop
                self._uncertain.discard(ref)
                logger.exception("cannot build the notification for %s", dest.label)
                raise InvalidDestination(f"internal error: {type(exc).__name__}") from exc
            self._uncertain.discard(ref)

        started = time.perf_counter()
        result = await deliver(
            attempt,
            key=dest.key,
            min_interval=dest.min_interval,
            at_most_once=dest.at_most_once,
            policy=self.policy,
            limiter=self.limiter,
            hooks=_Hooks(self.log, ref, self._secrets),
            sleep=self._sleep,
            rand=self._rand,
            on_retry=self.metrics.retries.labels(destination=dest.kind).inc,
        )
        if result.outcome == "lost_claim":
            self.metrics.skipped.labels(reason="claimed_elsewhere").inc()
            logger.info(
                "insight %s (%s) for %s was taken over by another notifier",
                ref.insight_id,
                ref.lifecycle,
                dest.label,
            )
            return
        if result.outcome == "sent":
            breaker.record_success()
            self.metrics.delivery_seconds.labels(destination=dest.kind).observe(
                time.perf_counter() - started
            )
        elif result.kind == "exhausted":
            breaker.record_exhausted()
        self._count(dest, result)
        await self._record(dest, ref, result)

    def _count(self, dest: Destination, result: DeliveryResult) -> None:
        if result.outcome == "sent":
            self.metrics.sent.labels(destination=dest.kind).inc()
        else:
            self.metrics.failed.labels(destination=dest.kind, kind=result.kind or "unknown").inc()

    async def _record(
        self, dest: Destination, ref: NotificationRef, result: DeliveryResult
    ) -> None:
        self._unrecorded[ref] = result
        error = scrub(result.error, self._secrets) if result.error else None
        if result.outcome == "sent":
            await self.log.mark_sent(ref)
            logger.info(
                "notified %s: insight %s (%s) after %d attempt(s)",
                dest.label,
                ref.insight_id,
                ref.lifecycle,
                result.attempts,
            )
        else:
            await self.log.mark_failed(ref, result.kind or "unknown", result.status_code, error)
            logger.warning(
                "notification to %s failed for good (%s): insight %s (%s), %d attempt(s): %s",
                dest.label,
                result.kind,
                ref.insight_id,
                ref.lifecycle,
                result.attempts,
                error,
            )
        del self._unrecorded[ref]


def item_of(insight: InsightEvent) -> Item:
    """What flood control needs of an insight event (the event itself as its payload)."""
    return Item(
        insight_id=insight.insight_id,
        lifecycle=insight.lifecycle.value,
        workspace_id=insight.workspace_id,
        deal_id=insight.deal_id,
        rule=insight.rule.value,
        rank=insight.priority.rank,
        value=insight.data.deal_value,
        payload=insight.model_dump_json(),
    )


class NotifierHandler:
    """The notifier's logic for the consume loop: select, wait for the model's text, deliver.

    With ``notify_flood_control`` the batch goes through flood control (``flood.py``) instead
    of straight to the destinations; its state and the messages it lets out are saved
    (``outbox.py``) before the batch is committed, and a background tick (every
    ``notify_flush_tick_seconds``) sends what becomes due between batches."""

    def __init__(
        self,
        settings: NotifierSettings,
        destinations: Sequence[Destination],
        metrics: NotifierMetrics,
        stop: asyncio.Event,
        *,
        secrets: Sequence[str] = (),
        enrichment_metrics: NotifierEnrichmentMetrics | None = None,
        log: NotificationStore | None = None,
        enrichments: EnrichmentLookup | None = None,
        flood_store: FloodStore | None = None,
        wall_clock: Clock = time.time,
        policy: Policy | None = None,
        directory: Directory | None = None,
        acks: AckLookup | None = None,
    ) -> None:
        self.settings = settings
        self._acks = acks
        self.policy = policy
        self.directory = directory
        self._keys_by_name = {n: d.key for d in destinations for n in d.names}
        self._destinations = list(destinations)
        self._metrics = metrics
        self._stop = stop
        self._secrets = list(secrets)
        self._enrichment_metrics = enrichment_metrics
        self._log = log
        self._enrichments = enrichments
        self._flood_store = flood_store
        self._wall_clock = wall_clock
        # without a policy: every shared destination, and the owner's own (email) ones
        self._recipients = tuple(d.key for d in self._destinations if d.kind not in PERSONAL)
        self._routed = policy is not None or len(self._recipients) < len(self._destinations)
        self.notifier: Notifier | None = None
        if log is not None:
            self.notifier = self._new_notifier(log, enrichments)
        self.flood: FloodControl | None = None
        self._saved: bytes | None = None
        self._outbox: list[Message] = []
        self._flood_lock = asyncio.Lock()
        self._drain_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._suppressed: dict[str, int] = {}

    def _new_notifier(
        self, log: NotificationStore, enrichments: EnrichmentLookup | None
    ) -> Notifier:
        return Notifier(
            self.settings,
            self._destinations,
            log,
            self._metrics,
            self._stop,
            secrets=self._secrets,
            enrichments=enrichments,
            enrichment_metrics=self._enrichment_metrics,
            routes=self.recipients if self._routed else None,
        )

    def _resolve(self, name: str, insight: InsightEvent) -> str | None:
        """``email:owner`` / ``email:manager`` -> ``email:<owner id>`` of this insight."""
        kind, _, who = name.partition(":")
        if kind not in PERSONAL or who not in ("owner", "manager"):
            return name
        owner = insight.data.owner_id
        person = owner if who == "owner" else (self.directory and self.directory.manager_of(owner))
        return None if not person else f"{kind}:{person}"

    def quiet_hours(self, insight: InsightEvent) -> dict[str, QuietHours]:
        """Per destination key, the quiet hours that hold ``insight`` (not urgent there)."""
        policy = self.policy
        if policy is None or not policy.quiet_hours:
            return {}
        out = {}
        for name, urgent in policy.deliveries(insight).items():
            quiet = policy.quiet_hours.get(name)
            resolved = self._resolve(name, insight)
            key = None if resolved is None else self._keys_by_name.get(resolved)
            if quiet is not None and key is not None and not urgent:
                out[key] = quiet
        return out

    def recipients(self, insight: InsightEvent) -> tuple[str, ...]:
        """The keys of the destinations ``insight`` goes to (the policy's, else all)."""
        if self.policy is None:
            if not self._routed:
                return self._recipients
            own = self._keys_by_name.get(f"email:{insight.data.owner_id}")
            return self._recipients if own is None else (*self._recipients, own)
        names = (self._resolve(name, insight) for name in self.policy.route(insight))
        keys = (self._keys_by_name.get(n) for n in names if n is not None)
        return tuple(dict.fromkeys(k for k in keys if k is not None))

    async def open(self, resources: Resources) -> None:
        """Migrate, then the notification and enrichment logs on the pool (unless given); with
        flood control, load its state and undelivered messages and start the tick."""
        if self.notifier is None:
            pool = resources.pool
            if pool is None:
                raise RuntimeError("the notifier needs a database")
            await migrate(pool)
            log = NotificationLog(
                pool,
                stale_after_seconds=self.settings.notify_http_timeout_seconds + STALE_GRACE_SECONDS,
            )
            self.notifier = self._new_notifier(log, PgEnrichmentLookup(pool))
            if self._flood_store is None and self.settings.notify_flood_control:
                self._flood_store = PgFloodStore(pool, self.settings.notifier_group_id)
            if self._acks is None:
                self._acks = PgAcks(pool)
        if not self.settings.notify_flood_control or self.flood is not None:
            return
        if self._flood_store is None:
            raise RuntimeError("flood control needs a database")
        state, outbox = await self._flood_store.load()
        policy = self.settings.flood_policy()
        if state is None:
            self.flood = FloodControl(policy)
        else:
            self.flood = FloodControl.from_state(policy, state)
            self._saved = orjson.dumps(state)
        self._outbox = outbox
        if outbox:
            logger.info("%d held notification message(s) left to deliver", len(outbox))
        self._ticker = asyncio.create_task(self._tick_loop())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None

    def decode(self, records: Records) -> list[InsightEvent]:
        assert self.notifier is not None
        return [
            insight
            for tp, recs in records.items()
            for rec in recs
            if (
                insight := self.notifier.select(
                    rec.value, f"{tp.topic}/{tp.partition}@{rec.offset}"
                )
            )
            is not None
        ]

    async def handle(
        self, insights: Sequence[InsightEvent], stop: asyncio.Event
    ) -> Sequence[Output] | None:
        assert self.notifier is not None
        if not insights:
            return ()
        ready = await self.notifier.with_enrichments(insights)
        if self.policy is not None:
            routed = [i for i in ready if self.recipients(i)]
            if len(routed) < len(ready):
                self._metrics.skipped.labels(reason="unrouted").inc(len(ready) - len(routed))
            ready = routed
        ready = await self._not_held(ready)
        if self.flood is None:
            if not await self.notifier.process(ready):
                return None
            return ()
        await self._advance([(item_of(i), self.recipients(i), self.quiet_hours(i)) for i in ready])
        if not await self.drain():
            return None
        return ()

    async def _escalations(self, flood: FloodControl, now: float) -> list[Message]:
        """Messages to the managers of the owners of watched insights whose time is up and
        that nobody acknowledged or snoozed (nor resolved: the watch ends with it)."""
        expired = flood.expired(now)
        if not expired:
            return []
        held = set()
        if self._acks is not None:
            held = await self._acks.held({i.insight_id for i in expired}, self._now())
        out = []
        for item in expired:
            if item.insight_id in held:
                continue
            owner = insight_of(item).data.owner_id
            manager = self.directory.manager_of(owner) if self.directory else None
            key = self._keys_by_name.get(f"email:{manager}") if manager else None
            if key is None:
                logger.info("insight %s: nobody to escalate to (owner %s)", item.insight_id, owner)
                continue
            out.append(flood.escalation(item, key))
        return out

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC)

    async def _not_held(self, insights: Sequence[InsightEvent]) -> list[InsightEvent]:
        """``insights`` less those acknowledged or snoozed (an escalation always passes)."""
        if self._acks is None:
            return list(insights)
        ids = {i.insight_id for i in insights if i.lifecycle != Lifecycle.ESCALATED}
        held = await self._acks.held(ids, self._now())
        if not held:
            return list(insights)
        kept = [i for i in insights if i.insight_id not in held or i.lifecycle not in _HOLDABLE]
        self._metrics.skipped.labels(reason="acknowledged").inc(len(insights) - len(kept))
        return kept

    async def _without_held(self, message: Message) -> Message | None:
        """A held message less the insights acknowledged or snoozed since it was made; None
        when nothing is left to say (a burst summary is sent as it is)."""
        if self._acks is None or message.kind == "burst":
            return message
        ids = {i.insight_id for i in message.items if i.lifecycle != "escalated"}
        held = await self._acks.held(ids, self._now())
        if not held:
            return message
        items = tuple(
            i for i in message.items if i.insight_id not in held or i.lifecycle == "escalated"
        )
        self._metrics.skipped.labels(reason="acknowledged").inc(len(message.items) - len(items))
        if not items:
            return None
        return dataclasses.replace(message, items=items, count=len(items))

    # -- flood control ----------------------------------------------------------------------------

    async def _advance(
        self, items: Sequence[tuple[Item, tuple[str, ...], Mapping[str, QuietHours]]]
    ) -> None:
        """Offer ``items``, take what is due, and save both before anything is committed or
        sent. On a failed save the state in memory goes back to the last saved one."""
        assert self._flood_store is not None
        async with self._flood_lock:
            flood = self.flood
            assert flood is not None
            now = self._wall_clock()
            try:
                escalate = self.settings.notify_escalate_after_hours * 3600.0
                for item, recipients, quiet in items:
                    held = {k: u for k, q in quiet.items() if (u := q.until(now)) is not None}
                    flood.offer(item, recipients, now, held)
                    if escalate > 0 and item.lifecycle != "resolved" and item.rank == CRITICAL:
                        flood.watch(item, now + escalate)
                messages = flood.due(now)
                messages += await self._escalations(flood, now)
                if not items and not messages:
                    return
                state = orjson.dumps(flood.to_state())
                await self._flood_store.save(state, messages)
            except BaseException:
                policy = self.settings.flood_policy()
                self.flood = (
                    FloodControl(policy)
                    if self._saved is None
                    else FloodControl.from_state(policy, orjson.loads(self._saved))
                )
                raise
            self._saved = state
            self._outbox.extend(messages)
            for message in messages:
                self._metrics.flood_messages.labels(kind=message.kind).inc()
            for reason, count in flood.suppressed.items():
                new = count - self._suppressed.get(reason, 0)
                if new > 0:
                    self._metrics.skipped.labels(reason=reason).inc(new)
            self._suppressed = dict(flood.suppressed)

    async def drain(self) -> bool:
        """Deliver the outbox in order; False when the stop event came first."""
        assert self.notifier is not None
        assert self._flood_store is not None
        async with self._drain_lock:
            while self._outbox:
                message = self._outbox[0]
                current = await self._without_held(message)
                targets = [d for d in self._destinations if d.key == message.recipient]
                if current is None:
                    targets = []
                else:
                    message = current
                if not targets and current is not None:
                    logger.warning(
                        "dropping held message %s: its destination is no longer configured",
                        message.message_id,
                    )
                for dest in targets:
                    if self._stop.is_set():
                        return False
                    try:
                        await self.notifier.notify_message(dest, message)
                    except Stopping:
                        return False
                await self._flood_store.done(self._outbox[0].message_id)
                self._outbox.pop(0)
        return True

    async def tick(self) -> None:
        """Send what became due since the last batch (called every flush tick)."""
        await self._advance(())
        if self._outbox:
            await self.drain()

    async def _tick_loop(self) -> None:
        seconds = self.settings.notify_flush_tick_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
            if self._stop.is_set():
                return
            try:
                await self.tick()
            except DB_ERRORS as exc:
                logger.warning("held notifications not sent yet (database: %s); retrying", exc)
            except Exception:
                logger.exception("held notifications not sent yet; retrying")


def loop_options(settings: NotifierSettings, database: Database | None) -> LoopOptions:
    """The notifier's loop: one fetch per batch, no read-ahead, the one outage policy."""
    return LoopOptions(
        name="notifier",
        subscription=Subscription(
            topics=(settings.topic_insights,),
            group_id=settings.notifier_group_id,
            client_id=f"{settings.kafka_client_id}-notifier",
            max_poll_interval_ms=settings.notify_max_poll_interval_ms,
        ),
        batch_max=settings.notify_max_batch_records,
        idle_poll_ms=settings.notify_fetch_timeout_ms,
        database=database,
        retry_initial_seconds=settings.notify_db_retry_seconds,
        retry_max_seconds=max(
            settings.notify_db_retry_seconds, settings.notify_db_retry_max_seconds
        ),
    )


async def run_notifier(
    settings: NotifierSettings,
    registry: CollectorRegistry,
    health: Health,
    stop_event: asyncio.Event,
    http_client: httpx.AsyncClient | None = None,
    *,
    pool: PgPool | None = None,
    console_stream: TextIO | None = None,
    broker: Broker | None = None,
) -> None:
    """Run the notifier until ``stop_event`` is set.

    ``http_client``/``pool`` are borrowed when given (and left open), else created and closed
    here. The pool is migrated (``vectoros.db.migrate``) either way. Waits for PostgreSQL and
    the broker as long as it takes (not ready meanwhile). Raises ``ConfigError`` when no
    destination is configured.
    """
    metrics = NotifierMetrics(registry)
    secrets = secrets_of(settings)
    own_http = http_client is None
    http = http_client or httpx.AsyncClient(
        timeout=settings.notify_http_timeout_seconds,
        follow_redirects=False,
        headers={"user-agent": f"vectoros-notifier/{__version__}"},
    )
    try:
        with redact_logs(secrets):
            directory = None
            if settings.notify_directory_file is not None:
                try:
                    directory = load_directory(settings.notify_directory_file)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
            destinations = build_destinations(
                settings, http, console_stream=console_stream, directory=directory
            )
            if settings.notify_escalate_after_hours > 0 and (
                not settings.notify_flood_control or directory is None
            ):
                raise ConfigError(
                    "VECTOROS_NOTIFY_ESCALATE_AFTER_HOURS needs VECTOROS_NOTIFY_FLOOD_CONTROL=true "
                    "and VECTOROS_NOTIFY_DIRECTORY_FILE (who the managers are)"
                )
            if not settings.has_destinations or not destinations:
                raise ConfigError(
                    "the notifier has no destination: set VECTOROS_SLACK_WEBHOOK_URLS, "
                    "VECTOROS_TEAMS_WEBHOOK_URLS, VECTOROS_SMTP_HOST (with a directory), "
                    "VECTOROS_WEBHOOK_URLS (with VECTOROS_WEBHOOK_SECRET) or "
                    "VECTOROS_NOTIFY_CONSOLE=true"
                )
            policy = None
            if settings.notify_policy_file is not None:
                try:
                    policy = load_policy(settings.notify_policy_file)
                    known = {n for d in destinations for n in d.names}
                    for kind in {d.kind for d in destinations} & PERSONAL:
                        known |= {f"{kind}:owner", f"{kind}:manager"}
                    policy.check(known)
                    if policy.quiet_hours and not settings.notify_flood_control:
                        raise ValueError(
                            f"{settings.notify_policy_file}: quiet_hours hold notifications, "
                            "which needs VECTOROS_NOTIFY_FLOOD_CONTROL=true"
                        )
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
            handler = NotifierHandler(
                settings,
                destinations,
                metrics,
                stop_event,
                secrets=secrets,
                enrichment_metrics=NotifierEnrichmentMetrics(registry),
                policy=policy,
                directory=directory,
            )
            database = Database(
                dsn=settings.dsn() if pool is None else "",
                max_size=len(destinations) + 2,
                pool=pool,
            )
            loop = ConsumeLoop(
                handler, broker or KafkaBroker(settings), loop_options(settings, database)
            )
            health.register("notifier", loop.ready)
            logger.info(
                "notifier consuming %s as group %s (once the broker and PostgreSQL answer); "
                "destinations: %s",
                settings.topic_insights,
                settings.notifier_group_id,
                ", ".join(d.label for d in destinations),
            )
            await loop.run(stop_event)
    finally:
        if own_http:
            await http.aclose()
        logger.info("notifier stopped")
