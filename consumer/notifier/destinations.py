"""The notifier's destinations: one ``Destination`` per configured place (Slack and Teams
webhooks, signed webhooks, each owner's email and phone from the directory, the console), each
with how it sends one insight and one flood-control message. Keys and labels are safe to store
and log; URLs, tokens and passwords stay inside the send functions (``secrets_of`` lists them
for redaction)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from consumer.notifier.console import ConsoleClient, format_insight
from consumer.notifier.delivery import Clock, destination_key, redact_url
from consumer.notifier.digest import console_text, insight_of, slack_message, webhook_body
from consumer.notifier.directory import Directory
from consumer.notifier.email import EmailClient, build_email
from consumer.notifier.flood import Message
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.slack import SlackClient, build_message, deal_url
from consumer.notifier.slack_app import PgThreads, SlackAppClient
from consumer.notifier.sms import SmsClient, insight_text, message_text
from consumer.notifier.teams import TeamsClient, insight_card, message_card
from consumer.notifier.webhook import WebhookClient, payload
from schemas.acks import InsightAck
from schemas.insights import InsightEvent, Lifecycle
from vectoros.ack_links import AckLink, sign
from vectoros.db import PgPool

logger = logging.getLogger(__name__)

Send = Callable[[InsightEvent, str], Awaitable[None]]
SendMessage = Callable[[Message, str], Awaitable[None]]
PERSONAL = frozenset({"email", "sms"})  # destinations of one person, routed by the insight's owner


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
    bind: Callable[[PgPool], None] | None = field(default=None, repr=False)  # gets the pool
    show_answer: Callable[[InsightAck], Awaitable[bool]] | None = field(default=None, repr=False)


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
    if settings.slack_bot_token is not None and settings.slack_channels:
        app = SlackAppClient(
            http,
            settings.slack_bot_token,
            base_url=settings.slack_api_url,
            timeout=timeout,
            wall_clock=wall_clock,
        )

        def bind_threads(pool: PgPool, app: SlackAppClient = app) -> None:
            app.threads = PgThreads(pool)

        for position, channel in enumerate(settings.slack_channels):

            async def send_app(insight: InsightEvent, _id: str, channel: str = channel) -> None:
                await app.send_insight(channel, insight, deal_url_template=template)

            async def send_app_message(message: Message, _id: str, channel: str = channel) -> None:
                await app.send_message(channel, message, deal_url_template=template)

            async def show_answer(ack: InsightAck, channel: str = channel) -> bool:
                return await app.show_answer(channel, ack)

            add(
                Destination(
                    kind="slack_app",
                    key=destination_key("slack_app", channel),
                    label=f"slack_app:{channel}",
                    at_most_once=settings.slack_at_most_once,
                    min_interval=settings.slack_min_interval_seconds,
                    send=send_app,
                    send_message=send_app_message,
                    names=(f"slack_app:{position}",),
                    bind=bind_threads,
                    show_answer=show_answer,
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
                owner_id: str = owner_id,
            ) -> None:
                await smtp.send(
                    build_email(
                        insight,
                        sender=settings.email_from,
                        to=address,
                        to_name=name,
                        message_id=msg_id,
                        deal_url_template=template,
                        answer_links=answer_links(settings, insight, owner_id, wall_clock()),
                    )
                )

            async def send_email_message(
                message: Message,
                msg_id: str,
                address: str = person.email,
                name: str | None = person.name,
                owner_id: str = owner_id,
            ) -> None:
                single = (
                    message.kind == "alert"
                    and len(message.items) == 1
                    and message.items[0].lifecycle != "flapping"
                )
                links = (
                    answer_links(settings, insight_of(message.items[0]), owner_id, wall_clock())
                    if single
                    else []
                )
                await smtp.send(
                    build_email(
                        message,
                        sender=settings.email_from,
                        to=address,
                        to_name=name,
                        message_id=msg_id,
                        deal_url_template=template,
                        answer_links=links,
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
    if settings.slack_bot_token is not None:
        values.append(settings.slack_bot_token.get_secret_value())
    if settings.notify_ack_link_key is not None:
        values.append(settings.notify_ack_link_key.get_secret_value())
    if settings.twilio_auth_token is not None:
        values.append(settings.twilio_auth_token.get_secret_value())
    return sorted(values, key=len, reverse=True)


ANSWER_LABELS = (
    ("acknowledged", "Acknowledge"),
    ("snooze_1d", "Snooze 1 day"),
    ("not_useful", "Not useful"),
)


def answer_links(
    settings: NotifierSettings, insight: InsightEvent, recipient: str, now: float
) -> list[tuple[str, str]]:
    """The signed answer links of an open insight's email (none without the settings)."""
    key, base = settings.notify_ack_link_key, settings.notify_ack_link_url
    if key is None or base is None or insight.lifecycle == Lifecycle.RESOLVED:
        return []
    expires = int(now + settings.notify_ack_link_ttl_hours * 3600)
    secret = key.get_secret_value().encode()
    base = base.rstrip("/")
    out = []
    for answer, label in ANSWER_LABELS:
        token = sign(secret, AckLink(insight.insight_id, answer, recipient, expires))
        out.append((label, f"{base}/acks/{token}"))
    return out
